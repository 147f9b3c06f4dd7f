"""What every console entry point shares: one-line errors, exit statuses, ``--help`` defaults.

It lives apart from :mod:`rt_panoptic_ros.cli` so that the training subpackage's tools
(``rt-panoptic-eval``, ``rt-panoptic-synth``, ...) report errors the same way without importing
the inference CLIs (the import-linter contracts in ``pyproject.toml`` forbid that direction).
It imports nothing but :mod:`rt_panoptic_ros.errors` and :mod:`rt_panoptic_ros.allocator`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from rt_panoptic_ros.allocator import keep_large_blocks
from rt_panoptic_ros.errors import RTPanopticError

#: Exit status of a run stopped by an error the user can fix (bad file, bad argument).
EXIT_ERROR = 1
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run ``body``; turn the errors a user can cause into one line on stderr and a status.

    First malloc is told to keep frame-sized blocks (``allocator.py``): every tool handles
    images and tensors of megabytes."""
    keep_large_blocks()
    try:
        return body() or 0
    except RTPanopticError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:  # disk full, permission denied, ...: name the file
        where = f"{error.filename}: " if error.filename else ""
        print(f"{prog}: error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def one_line(error: BaseException) -> str:
    """An error's message, without the traceback torch's DataLoader wraps a worker's error in.

    A worker's ``ImageFileError("x.png: cannot decode ...")`` arrives re-raised as the same
    type with "Caught ImageFileError in DataLoader worker process 0. Original Traceback ..."
    and the worker's whole traceback as its message; its last line is the original.
    """
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` that shows defaults in ``--help``."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )

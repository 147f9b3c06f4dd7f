"""Console entry points (``rt-panoptic-*``): argument parsing and error reporting only.

Each ``*_main(argv=None)`` parses its arguments, calls plain functions of the package and
returns an exit status. Every error a user can cause is printed as one line
(``rt-panoptic-convert: error: ...``) with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rt_panoptic_ros.errors import RTPanopticError

#: Exit status of a run stopped by an error the user can fix (bad file, bad argument).
EXIT_ERROR = 1
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run ``body``; turn the errors a user can cause into one line on stderr and a status."""
    try:
        return body() or 0
    except RTPanopticError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:  # disk full, permission denied, ...: name the file
        where = f"{error.filename}: " if error.filename else ""
        print(f"{prog}: error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` that shows defaults in ``--help``."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def convert_main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-convert --from tri IN.pth OUT.pt``: the public TRI model -> our model file."""
    parser = make_parser(
        "rt-panoptic-convert",
        "Convert a checkpoint of the original implementation (TRI-ML/realtime_panoptic) into "
        "a self-describing rt_panoptic_ros model file.",
    )
    parser.add_argument("--from", dest="source_format", choices=["tri"], required=True,
                        help="format of the input checkpoint")  # fmt: skip
    parser.add_argument("input", help="checkpoint to convert (e.g. cvpr_realtime_pano_cityscapes_"
                        "standalone_no_prefix.pth)")  # fmt: skip
    parser.add_argument("output", help="model file to write (.pt)")
    parser.add_argument("--preset", default="tri_cityscapes",
                        help="architecture and dataset the weights are for")  # fmt: skip
    parser.add_argument("--config", default=None,
                        help="YAML config instead of --preset (other TRI models, e.g. COCO)")  # fmt: skip
    args = parser.parse_args(argv)

    def body() -> int:
        from rt_panoptic_ros.config import load_yaml, preset
        from rt_panoptic_ros.model.tri_checkpoint import convert_tri_checkpoint

        cfg = load_yaml(args.config) if args.config else preset(args.preset)
        print(f"converting {args.input} ({args.source_format}) ...", file=sys.stderr)
        model = convert_tri_checkpoint(args.input, args.output, cfg)
        params = sum(p.numel() for p in model.parameters())
        print(f"wrote {args.output}: {cfg.model.backbone}, {cfg.dataset.num_classes} classes, "
              f"{params / 1e6:.1f} M parameters")  # fmt: skip
        return 0

    return run_cli(parser.prog, body)

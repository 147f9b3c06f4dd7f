"""Writing a file atomically: into a temporary file beside it, then renamed over it.

One implementation for everything the package writes that a later run reads back (model
files, ONNX exports, TensorRT engines): a crash or a full disk mid-write leaves the previous
file (or none), never a truncated one under the final name. Errors name the path the caller
asked for, never the temporary file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], mode: int = 0o644) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, atomically.

    Args:
        mode: permissions of the new file (``mkstemp`` would make it private).

    Raises:
        OSError: the file cannot be written (``filename`` is ``path``).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file name", str(path))
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as error:
        raise type(error)(error.errno, error.strerror or str(error), str(path)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)

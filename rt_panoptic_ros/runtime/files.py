"""Files the runtime writes: atomic writes, content hashes, and where caches live.

Derived files (ONNX exports, TensorRT engines) are cached *beside the model file* in
``<model dir>/<model stem>.cache/``, so they move, ship and get deleted with the model and
never land in ``/tmp``. When that folder cannot be written (a model installed read-only under
``install/share``), the cache moves to ``$XDG_CACHE_HOME/rt_panoptic_ros/`` (default
``~/.cache``), in a folder named after the model and a hash of its absolute path, with a log
line. ``cache_dir=`` overrides both.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from rt_panoptic_ros.atomic_files import atomic_write

log = logging.getLogger("rt_panoptic_ros.runtime")

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`~rt_panoptic_ros.atomic_files.atomic_write`).

    A crash or a full disk mid-write leaves the previous file (or none), never a truncated one
    that a later run would take for a cache hit.
    """
    atomic_write(path, lambda f: f.write(data))


def cache_dir_for(model_path: str | Path, override: str | Path | None = None) -> Path:
    """The folder derived files of ``model_path`` are cached in (see the module docstring).

    The folder exists when this returns.
    """
    if override is not None:
        folder = Path(override)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    model_path = Path(model_path).resolve()
    beside = model_path.parent / f"{model_path.stem}.cache"
    if _writable(beside):
        return beside
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rt_panoptic_ros"
    tag = hashlib.sha256(str(model_path).encode()).hexdigest()[:12]
    folder = base / f"{model_path.stem}-{tag}"
    log.info("%s is not writable: caching its exports and engines in %s", beside, folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)

"""The TensorRT engine cache: keys, the engine file format, reuse or rebuild. Pure Python.

An engine only runs on the GPU model and TensorRT version that built it, for the shape it was
built with, and only does what the ONNX graph it came from did, in that graph's precision
(engines are built strongly typed: :mod:`~rt_panoptic_ros.runtime.backends.tensorrt_backend`).
All of that is its :class:`EngineKey`, stored inside the engine file, checked on every load:

- one file per model file, precision and input shape:
  ``<cache dir>/<model stem>.<pt|onnx>-<model sha256[:16]>.<precision>.<N>x3x<H>x<W>.engine``
  (cache dir: see :mod:`rt_panoptic_ros.runtime.files`). The model file's kind and hash are
  in the name, so ``model.pt`` and ``model.onnx`` beside each other (or two models of one
  name sharing a cache folder) never build over each other's engines; a changed model file
  gets a new engine file, and the old one stays until the cache folder is cleared;
- a file whose key differs from the wanted one (another GPU, TensorRT version or ONNX graph)
  is rebuilt in place, with a log line that names what changed;
- a missing, truncated or otherwise corrupt file, or one written before engines were strongly
  typed (format 1), is (re)built, with a log line;
- a matching file is reused as is.

File format (``ENGINE_MAGIC``, then an 8-byte little-endian header length, a UTF-8 JSON
header, then the serialized engine)::

    {"format_version": 2, "key": {...EngineKey}, "config": {...Config},
     "engine_bytes": n, "engine_sha256": "..."}

so an engine file is self-describing (it carries its model's config) and a truncated copy is
recognised before TensorRT sees it. TensorRT's own tools need the bare engine, which is the
file minus its header.

Nothing here imports TensorRT: GPU name and TensorRT version are plain strings, which is
what lets the tests exercise all of it on a machine without either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import ConfigError, EngineError
from rt_panoptic_ros.runtime.files import atomic_write_bytes

log = logging.getLogger("rt_panoptic_ros.runtime")

ENGINE_MAGIC = b"RT-PANOPTIC-TRT\n"
#: 2: strongly typed engines (precision from the ONNX graph), the model file's kind and hash in
#: the key. Format 1 files were built weakly typed (FP16 / INT8 builder flags): rebuilt.
ENGINE_FORMAT_VERSION = 2
PRECISIONS: tuple[str, ...] = ("fp16", "fp32", "int8")
#: What an engine can be built from: a model file (``.pt``, exported to ONNX) or an ONNX file.
SOURCE_KINDS: tuple[str, ...] = ("pt", "onnx")
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two engines with equal keys are interchangeable.

    Attributes:
        source_kind: what the user gave: a model file (``pt``) or an ONNX file (``onnx``).
        source_sha256: hash of that file.
        onnx_sha256: hash of the ONNX file the engine was built from (the file itself for an
            ``onnx`` source, the cached export of a ``pt`` one). It changes with the model, the
            precision and, for int8, the calibration images (their scales are in the graph).
        gpu: the GPU's name, as ``torch.cuda.get_device_name`` gives it.
        tensorrt: ``tensorrt.__version__``.
        precision: the ONNX graph's, one of :data:`PRECISIONS`.
        input_shape: ``(N, 3, H, W)`` the engine takes (its one optimisation profile).
    """

    source_kind: str
    source_sha256: str
    onnx_sha256: str
    gpu: str
    tensorrt: str
    precision: str
    input_shape: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        if self.source_kind not in SOURCE_KINDS:
            raise ConfigError(f"source kind: {self.source_kind!r}, expected one of {', '.join(SOURCE_KINDS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r}, expected one of {', '.join(PRECISIONS)}")
        shape = self.input_shape
        if len(shape) != 4 or shape[1] != 3 or any(not isinstance(d, int) or d < 1 for d in shape):
            raise ConfigError(f"input shape: {list(shape)}, expected [N, 3, H, W] with positive sizes")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> EngineKey:
        try:
            return cls(**{**data, "input_shape": tuple(data["input_shape"])})
        except (TypeError, KeyError, ConfigError) as error:
            raise EngineError(f"engine key {data!r} is not readable ({error})") from None

    def changes_from(self, other: EngineKey) -> list[str]:
        """What differs between ``other`` (what a file holds) and this key, for people."""
        labels = {
            "source_kind": "model file kind",
            "source_sha256": "model file (it changed)",
            "onnx_sha256": "ONNX graph (the model or its export changed)",
            "gpu": "GPU",
            "tensorrt": "TensorRT",
            "precision": "precision",
            "input_shape": "input shape",
        }
        changes = []
        for name, label in labels.items():
            old, new = getattr(other, name), getattr(self, name)
            if old != new:
                if name.endswith("sha256"):  # hashes: the first 12 digits say enough
                    changes.append(f"{label} {old[:12] or 'none'} -> {new[:12] or 'none'}")
                else:
                    changes.append(f"{label} {_show(old)} -> {_show(new)}")
        return changes


def _show(value: Any) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else repr(value)


@dataclass(frozen=True)
class EngineFile:
    """An engine file's content: its key, its model's config and the serialized engine."""

    key: EngineKey
    cfg: Config
    engine: bytes


def engine_path(cache_dir: str | Path, stem: str, key: EngineKey) -> Path:
    """``<cache_dir>/<stem>.<pt|onnx>-<source sha256[:16]>.<precision>.<N>x3x<H>x<W>.engine``.

    ``stem`` is the model file's; its kind and hash keep two files of one stem apart.
    """
    shape = "x".join(map(str, key.input_shape))
    return (
        Path(cache_dir) / f"{stem}.{key.source_kind}-{key.source_sha256[:16]}.{key.precision}.{shape}.engine"
    )


def write_engine_file(path: str | Path, key: EngineKey, cfg: Config, engine: bytes) -> None:
    """Write an engine with its key and config (atomically; see the module docstring)."""
    header = {
        "format_version": ENGINE_FORMAT_VERSION,
        "key": key.to_dict(),
        "config": cfg.to_dict(),
        "engine_bytes": len(engine),
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
    }
    raw = json.dumps(header).encode()
    atomic_write_bytes(path, ENGINE_MAGIC + _LENGTH.pack(len(raw)) + raw + engine)


def read_engine_file(path: str | Path) -> EngineFile:
    """Read and verify an engine file.

    Raises:
        EngineError: missing, not an engine file of ours, truncated or altered (named).
    """
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path}: no such engine file")
    data = path.read_bytes()
    start = len(ENGINE_MAGIC) + _LENGTH.size
    if not data.startswith(ENGINE_MAGIC) or len(data) < start:
        raise EngineError(
            f"{path}: not an rt_panoptic_ros engine file (build it with rt-panoptic-build-engine)"
        )
    (length,) = _LENGTH.unpack_from(data, len(ENGINE_MAGIC))
    try:
        header = json.loads(data[start : start + length])
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        raise EngineError(f"{path}: corrupt engine file (unreadable header)") from None
    version = header.get("format_version")
    if not isinstance(version, int) or version > ENGINE_FORMAT_VERSION:
        raise EngineError(
            f"{path}: engine file format {version!r}; this version reads up to {ENGINE_FORMAT_VERSION}"
        )
    if version < ENGINE_FORMAT_VERSION:
        raise EngineError(
            f"{path}: engine file format {version}, built weakly typed by an older rt_panoptic_ros: "
            "build it again (rt-panoptic-build-engine on the .pt or .onnx file)"
        )
    engine = data[start + length :]
    if len(engine) != header.get("engine_bytes") or hashlib.sha256(engine).hexdigest() != header.get(
        "engine_sha256"
    ):
        raise EngineError(
            f"{path}: corrupt engine file ({len(engine)} engine bytes, expected {header.get('engine_bytes')} "
            "with a matching SHA-256; truncated or altered)"
        )
    try:
        cfg = Config.from_dict(header.get("config"), source=f"{path}: config")
    except ConfigError as error:
        raise EngineError(str(error)) from None
    return EngineFile(EngineKey.from_dict(header.get("key")), cfg, engine)


def load_or_build(path: str | Path, key: EngineKey, cfg: Config, build: Callable[[], bytes]) -> EngineFile:
    """The engine at ``path`` if its key equals ``key``; otherwise ``build()`` it and write it.

    Every reason to build is logged (``rt_panoptic_ros.runtime`` logger, INFO): no file,
    a corrupt file, or a file whose key differs (what differs is named).
    """
    path = Path(path)
    if not path.exists():
        log.info("no TensorRT engine at %s: building it (%s)", path, describe_key(key))
    else:
        try:
            cached = read_engine_file(path)
        except EngineError as error:
            log.warning("%s: rebuilding", error)
        else:
            changes = key.changes_from(cached.key)
            if not changes:
                log.info("using the TensorRT engine %s (%s)", path, describe_key(key))
                return cached
            log.warning("%s was built for another %s: rebuilding", path, "; ".join(changes))
    engine = build()
    write_engine_file(path, key, cfg, engine)
    log.info("wrote the TensorRT engine %s (%.1f MB)", path, len(engine) / 1e6)
    return EngineFile(key, cfg, engine)


def describe_key(key: EngineKey) -> str:
    return f"{key.precision}, {'x'.join(map(str, key.input_shape))}, {key.gpu}, TensorRT {key.tensorrt}"


def check_engine_runs_here(key: EngineKey, gpu: str, tensorrt: str, where: str) -> None:
    """Raise :class:`EngineError` unless an engine built for ``key`` runs on this GPU and TensorRT.

    For engine files given directly: there is no model to rebuild them from.
    """
    changes = replace(key, gpu=gpu, tensorrt=tensorrt).changes_from(key)
    if changes:
        raise EngineError(
            f"{where}: built for another {'; '.join(changes)}: build it again here "
            "(rt-panoptic-build-engine on the .pt or .onnx file)"
        )

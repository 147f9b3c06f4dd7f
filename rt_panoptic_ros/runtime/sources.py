"""What a backend is built from: a model file, an exported ONNX file, an engine, or a network.

:meth:`ModelSource.open` accepts

- an :class:`~rt_panoptic_ros.model.RTPanoNet` in memory (torch; ONNX Runtime via an
  in-memory export; no cache, since there is nowhere to put one),
- a model file (``.pt``, ``load_model``): every backend; ONNX exports and engines are cached
  beside it (:mod:`rt_panoptic_ros.runtime.files`),
- an ONNX file written by ``rt-panoptic-export`` (``.onnx``): ONNX Runtime and TensorRT,
- an engine file written by ``rt-panoptic-build-engine`` (``.engine``): TensorRT.

The last two carry the model's config, so they need no ``.pt`` beside them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import ConfigError
from rt_panoptic_ros.model import RTPanoNet, load_model
from rt_panoptic_ros.runtime.calibration import calibration_fingerprint, calibration_images
from rt_panoptic_ros.runtime.engine_cache import EngineFile, read_engine_file
from rt_panoptic_ros.runtime.export import (
    EXPORT_OPSET,
    META_CALIBRATION,
    META_SOURCE_SHA256,
    export_onnx,
    metadata,
    read_onnx,
)
from rt_panoptic_ros.runtime.files import cache_dir_for, file_sha256
from rt_panoptic_ros.runtime.precision import check_precision, graph_precision

log = logging.getLogger("rt_panoptic_ros.runtime")

SourceKind = Literal["memory", "checkpoint", "onnx", "engine"]
#: Input size a dynamic export is traced at (any multiple of 128 works; small is fast).
DYNAMIC_TRACE_SIZE = (256, 256)


@dataclass
class ModelSource:
    """A model in one of the forms a backend can start from (see the module docstring).

    Attributes:
        cfg: the model's config (from the network, the checkpoint, the ONNX metadata or the
            engine header).
        kind: which form it is.
        network: the torch network, for ``memory`` and ``checkpoint`` sources.
        path: the file, for every kind but ``memory``.
        engine: the verified engine file, for ``engine`` sources.
    """

    cfg: Config
    kind: SourceKind
    network: RTPanoNet | None = None
    path: Path | None = None
    engine: EngineFile | None = None
    _sha256: str | None = field(default=None, repr=False)

    @classmethod
    def open(cls, model: str | Path | RTPanoNet | ModelSource) -> ModelSource:
        """Recognise ``model`` by type and suffix and read what is needed of it.

        Raises:
            CheckpointError / ExportError / EngineError: a missing or unreadable file, named.
        """
        if isinstance(model, ModelSource):
            return model
        if isinstance(model, RTPanoNet):
            return cls(model.cfg, "memory", network=model)
        path = Path(model)
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            _, cfg = read_onnx(path)
            return cls(cfg, "onnx", path=path)
        if suffix == ".engine":
            engine = read_engine_file(path)
            return cls(engine.cfg, "engine", path=path, engine=engine)
        network = load_model(path, "cpu")
        return cls(network.cfg, "checkpoint", network=network, path=path)

    @property
    def sha256(self) -> str:
        """SHA-256 of the file (computed once); the key of everything cached from it."""
        if self.path is None:
            raise ValueError("an in-memory network has no file hash")  # a bug, not user input
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    def describe(self) -> str:
        return "a network in memory" if self.path is None else str(self.path)

    def cache_dir(self, override: str | Path | None = None) -> Path:
        """Where exports and engines of this model are cached (created on demand)."""
        if self.path is None:
            raise ValueError("an in-memory network has no cache folder")  # a bug, not user input
        return cache_dir_for(self.path, override)


def cached_onnx(
    source: ModelSource,
    shape: tuple[int, int, int] | None,
    cache_dir: str | Path | None = None,
    precision: str | None = None,
    calibration_dir: str | Path | None = None,
) -> Path:
    """An ONNX file of ``source`` in ``precision``: the file itself for ``onnx`` sources, else
    exported once.

    Exports of a model file are cached as
    ``<cache dir>/<stem>.<sha256[:16]>.<N>x3x<H>x<W | dynamic>.<precision>[.<calibration[:8]>].opset17.onnx``:
    the model's hash, the shape, the precision and (int8) the calibration images' content are
    the key, so any change exports afresh, and an existing file is reused after checking that
    its metadata names the same model and calibration (a corrupt or foreign file is
    re-exported, with a log line).

    Args:
        shape: ``(N, H, W)`` for a static export, ``None`` for a dynamic one.
        precision: ``None``: an ONNX file's own, ``fp32`` for a model file.
        calibration_dir: int8 from a model file: the calibration images.

    Raises:
        ConfigError: an ONNX file asked for in another precision than its graph's, int8
            without calibration images.
    """
    if source.kind == "onnx":
        assert source.path is not None
        if precision is not None:
            proto, _ = read_onnx(source.path)
            has = graph_precision(proto)
            if has != check_precision(precision):
                raise ConfigError(
                    f"precision: {precision} asked for, but {source.path} is an {has} graph (precision "
                    f"is in the ONNX file: export one with rt-panoptic-export --precision {precision})"
                )
        return source.path
    if source.kind != "checkpoint" or source.network is None or source.path is None:
        raise ValueError(f"cannot export ONNX from a {source.kind} source")  # callers check the kind
    precision = check_precision(precision or "fp32")
    fingerprint = ""
    if precision == "int8":
        if calibration_dir is None:
            raise ConfigError(
                "precision int8: needs calibration images (calibration_dir, --calibration-dir DIR)"
            )
        fingerprint = calibration_fingerprint(calibration_images(calibration_dir, shape[0] if shape else 1))
    tag = "dynamic" if shape is None else f"{shape[0]}x3x{shape[1]}x{shape[2]}"
    calibrated = f".{fingerprint[:8]}" if fingerprint else ""
    path = (
        source.cache_dir(cache_dir)
        / f"{source.path.stem}.{source.sha256[:16]}.{tag}.{precision}{calibrated}.opset{EXPORT_OPSET}.onnx"
    )
    if path.exists():
        try:
            proto, _ = read_onnx(path)
            meta = metadata(proto)
            if (
                meta.get(META_SOURCE_SHA256) == source.sha256
                and meta.get(META_CALIBRATION, "") == fingerprint
            ):
                log.info("using the ONNX export %s", path)
                return path
            log.warning("%s: exported from another model file or calibration: re-exporting", path)
        except Exception as error:  # any unreadable cache file is simply made again
            log.warning("%s: re-exporting", error)
    height, width = DYNAMIC_TRACE_SIZE if shape is None else shape[1:]
    report = export_onnx(
        source.network, path, height, width, batch=1 if shape is None else shape[0],
        dynamic=shape is None, source_sha256=source.sha256, progress=log.info,
        precision=precision, calibration_dir=calibration_dir,
    )  # fmt: skip
    log.info("%s", report.summary())
    return path

"""Backends: what runs the network. Each maps uint8 ``[N, 3, H, W]`` RGB on its device to
:class:`~rt_panoptic_ros.model.HeadOutputs` on that device, so the decoder reads the outputs
where they are, whichever engine made them.

- ``torch`` (``torch_backend.py``): CPU, or CUDA with fp16 autocast, channels_last and
  optional CUDA-graph replay;
- ``onnxruntime`` (``onnxruntime_backend.py``): the exported graph on the CPU, or on CUDA /
  TensorRT execution providers where installed;
- ``tensorrt`` (``tensorrt_backend.py``): a TensorRT 10 engine, cached beside the model;
- ``auto`` (``selection.py``): the first of those this machine and model can run.

:func:`create_backend` builds one from anything :class:`~rt_panoptic_ros.runtime.sources.ModelSource`
opens (a network, a ``.pt``, ``.onnx`` or ``.engine`` file).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from rt_panoptic_ros.devices import resolve_device
from rt_panoptic_ros.errors import ConfigError, EngineError
from rt_panoptic_ros.model import HeadOutputs, RTPanoNet
from rt_panoptic_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, execution_providers
from rt_panoptic_ros.runtime.backends.selection import Availability, Choice, choose_backend, probe
from rt_panoptic_ros.runtime.backends.torch_backend import TorchBackend
from rt_panoptic_ros.runtime.export import export_proto
from rt_panoptic_ros.runtime.sources import DYNAMIC_TRACE_SIZE, ModelSource, cached_onnx

log = logging.getLogger("rt_panoptic_ros.runtime")

BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime", "tensorrt")

__all__ = [
    "BACKENDS",
    "Availability",
    "Backend",
    "BackendOptions",
    "Choice",
    "OnnxRuntimeBackend",
    "TorchBackend",
    "choose_backend",
    "create_backend",
    "probe",
]


class Backend(Protocol):
    """Runs the network: uint8 ``[N, 3, H, W]`` RGB on :attr:`device` -> ``HeadOutputs`` there."""

    name: str
    device: torch.device
    precision: str

    def __call__(self, images: Tensor) -> HeadOutputs: ...


@dataclass(frozen=True)
class BackendOptions:
    """How to build a backend; every field has a sensible default.

    Attributes:
        precision: ``fp32`` / ``fp16`` / ``int8``; ``None`` is the backend's default (torch:
            fp16 on CUDA, fp32 on the CPU; onnxruntime and tensorrt: an ONNX file's own
            precision, and for a model file fp32 / fp16). For onnxruntime and tensorrt the
            precision is in the ONNX graph (:mod:`~rt_panoptic_ros.runtime.precision`).
        input_shape: the fixed ``(N, 3, H, W)`` input, if there is one. TensorRT needs it;
            torch and onnxruntime (a dynamic export) take any size without it.
        cuda_graph: torch on CUDA: replay a captured CUDA graph of the network.
        cache_dir: where ONNX exports and engines go instead of beside the model file.
        calibration_dir: int8 from a model file (tensorrt, onnxruntime): the folder of
            calibration images it is quantised on (once; the export is cached).
    """

    precision: str | None = None
    input_shape: tuple[int, int, int, int] | None = None
    cuda_graph: bool = False
    cache_dir: Path | None = None
    calibration_dir: Path | None = None


def create_backend(
    name: str,
    model: RTPanoNet | ModelSource | str | Path,
    device: str | torch.device | None = None,
    options: BackendOptions | None = None,
) -> Backend:
    """The backend ``name`` (one of :data:`BACKENDS`) running ``model`` on ``device``.

    Args:
        device: ``None``: the CPU, except for ``tensorrt`` (the current CUDA device) and
            ``auto`` (whatever it picks).

    Raises:
        ConfigError: an unknown backend name or an option it does not support.
        EngineError: the backend cannot run here (library, GPU, engine); the message says why.
        CheckpointError / ExportError: an unreadable model, ONNX or engine file.
    """
    options = options or BackendOptions()
    if name not in BACKENDS:
        raise ConfigError(f"backend: {name!r}, expected one of {', '.join(BACKENDS)}")
    source = ModelSource.open(model)
    try:
        device = resolve_device(device)
    except EngineError:
        if name != "tensorrt":
            raise
        device = torch.device(device)  # TensorRT says what it lacks itself: its library first, then CUDA
    if name == "auto":
        choice = choose_backend(probe(), source.kind, options.input_shape is not None, device)
        log.info("%s", choice.reason)
        name, device = choice.backend, choice.device
    if name == "torch":
        if source.network is None:
            raise ConfigError(
                f"backend torch: needs a model file (.pt) or a network, got {source.describe()}"
            )
        return TorchBackend(
            source.network, device or torch.device("cpu"), options.precision, options.cuda_graph
        )
    if options.cuda_graph:
        raise ConfigError(f"cuda_graph: only the torch backend replays CUDA graphs, not {name}")
    if name == "onnxruntime":
        return _onnxruntime(source, device or torch.device("cpu"), options)
    from rt_panoptic_ros.runtime.backends.tensorrt_backend import open_tensorrt

    return open_tensorrt(
        source, device or torch.device("cuda"), options.precision, options.input_shape,
        options.cache_dir, options.calibration_dir,
    )  # fmt: skip


def _onnxruntime(source: ModelSource, device: torch.device, options: BackendOptions) -> OnnxRuntimeBackend:
    """ONNX Runtime on the source's ONNX: the file, a cached export, or one in memory.

    A model file is exported once per precision: dynamic (any input size) for fp32 and fp16;
    int8 at the fixed input size, where it is calibrated.
    """
    cache = None
    if source.kind == "engine":
        raise EngineError(f"backend onnxruntime: cannot run a TensorRT engine ({source.path})")
    execution_providers(device)  # refuse a device without a provider before exporting
    if source.kind == "memory":
        if options.precision not in (None, "fp32"):
            raise ConfigError(
                f"precision: {options.precision} for onnxruntime needs a model file (.pt or exported .onnx)"
            )
        assert source.network is not None
        # Nowhere to cache: export in memory (a second or two for the big model).
        graph: Path | bytes = export_proto(
            source.network, *DYNAMIC_TRACE_SIZE, dynamic=True
        ).SerializeToString()
        where = "in-memory ONNX export"
    else:
        shape = None
        if options.precision == "int8" and source.kind == "checkpoint":
            if options.input_shape is None:
                raise ConfigError(
                    "precision int8: calibrates at one input size: set it (input.height / input.width, "
                    "Predictor(input_size=...), --height / --width)"
                )
            shape = (options.input_shape[0], *options.input_shape[2:])
        graph = cached_onnx(source, shape, options.cache_dir, options.precision, options.calibration_dir)
        cache = source.cache_dir(options.cache_dir)
        where = str(graph)
    return OnnxRuntimeBackend(graph, source.cfg, device, options.precision, cache, where)

"""TensorRT: engine build from an ONNX graph, and execution with torch CUDA tensors bound as the
engine's I/O on the backend's own CUDA stream.

Supported: TensorRT 10.3 and newer 10.x (10.3 is JetPack 6's, the Jetson baseline) and 11.x
(``pip install tensorrt``). Older ones are refused with one line saying why: 8.x builds weakly
typed only (precision from builder flags), 9.x was a limited LLM-only release line, 10.0-10.2
are older than any platform tested. A newer major (12+) is untested: it is tried like 11
(strongly typed, no deprecated API) with a warning, since TensorRT removes API only as its
migration guide lists; a call it has removed fails there.

Precision is the ONNX graph's. Engines are built strongly typed on both majors (10: the
``STRONGLY_TYPED`` creation flag; 11: always), so every tensor keeps the type the graph gives
it: fp16 graphs carry their float16 casts, int8 graphs explicit Q/DQ nodes
(:mod:`~rt_panoptic_ros.runtime.precision`); float32 stays IEEE float32 (TF32 is turned off).
There are no FP16 / INT8 builder flags and no calibrator: TensorRT 11 removed them. Which
graph: an ``.onnx`` file is built as it is (a requested precision must match its graph's);
a ``.pt`` model file is exported once in the requested precision (default fp16; int8 needs
calibration images) and cached (:func:`~rt_panoptic_ros.runtime.sources.cached_onnx`).

``tensorrt`` is imported only when an engine is built or run, so the package imports without
it. When to rebuild is :mod:`~rt_panoptic_ros.runtime.engine_cache`'s business (pure Python);
what is here needs a GPU with TensorRT, but :func:`check_tensorrt_version` and :func:`network_flags`.

API references checked (each call below against both majors):

- 10.x -> 11.x: https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html
  and the removed-API list
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
- Builder / NetworkDefinitionCreationFlag, 10.x: https://docs.nvidia.com/deeplearning/tensorrt/api/python_api/infer/Core/Builder.html
  and 11.0: https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html
- IExecutionContext, 11.4: https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/_static/python-api/infer/Core/ExecutionContext.html
- The Python bindings' own source, tags v10.3.0 and v11.1 of https://github.com/NVIDIA/TensorRT
  (``python/src/infer/pyCore.cpp``), for return types the pages do not state.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rt_panoptic_ros.errors import ConfigError, EngineError, InputError
from rt_panoptic_ros.model import HeadOutputs
from rt_panoptic_ros.runtime.backends.input_checks import check_input_shape
from rt_panoptic_ros.runtime.engine_cache import (
    EngineFile,
    EngineKey,
    check_engine_runs_here,
    describe_key,
    engine_path,
    load_or_build,
    write_engine_file,
)
from rt_panoptic_ros.runtime.export import (
    INPUT_NAME,
    OUTPUT_NAMES,
    read_onnx,
    static_input_shape,
    unflatten_outputs,
)
from rt_panoptic_ros.runtime.files import file_sha256
from rt_panoptic_ros.runtime.precision import graph_precision
from rt_panoptic_ros.runtime.sources import ModelSource, cached_onnx

log = logging.getLogger("rt_panoptic_ros.runtime")

#: The oldest TensorRT supported: JetPack 6's (Jetson Orin).
MIN_TENSORRT = (10, 3)
#: The newest major tested; newer ones are tried with a warning.
MAX_TESTED_MAJOR = 11
SUPPORTED = "TensorRT 10.3+ or 11.x"
#: A model file's engine precision when none is asked for.
DEFAULT_PRECISION = "fp16"


def check_tensorrt_version(version: str) -> str | None:
    """Whether TensorRT ``version`` (``tensorrt.__version__``) is one this backend serves.

    Returns:
        ``None`` for 10.3+ and 11.x; a one-line warning for a newer, untested major.

    Raises:
        EngineError: an older TensorRT or an unreadable version, one line saying why.
    """
    major, minor = _major_minor(version)
    if (major, minor) < MIN_TENSORRT:
        why = {
            9: "TensorRT 9 was a limited, LLM-only release line",
            10: "10.3 is JetPack 6's, the oldest tested: upgrade TensorRT",
        }.get(
            major, f"TensorRT {major} builds weakly typed (precision from builder flags, not the ONNX graph)"
        )
        raise EngineError(f"tensorrt backend: TensorRT {version} found, needs {SUPPORTED}: {why}")
    if major > MAX_TESTED_MAJOR:
        return (
            f"tensorrt backend: TensorRT {version} is newer than the tested {SUPPORTED}: "
            f"trying it like {MAX_TESTED_MAJOR}.x (strongly typed)"
        )
    return None


def _major_minor(version: str) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        raise EngineError(f"tensorrt backend: cannot read the TensorRT version {version!r}") from None
    return major, minor


@functools.cache
def _warn_once(message: str) -> None:
    log.warning("%s", message)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or one clear :class:`EngineError` saying why not."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(
            f"tensorrt backend: the tensorrt Python package is not installed (needs {SUPPORTED} "
            "and an NVIDIA GPU)"
        ) from None
    warning = check_tensorrt_version(trt.__version__)
    if warning:
        _warn_once(warning)
    return trt


def network_flags(version: str, strongly_typed: int | None) -> int:
    """``Builder.create_network`` flags for a strongly typed network on TensorRT ``version``.

    Args:
        strongly_typed: ``int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)``, or ``None``
            where the member does not exist.
    """
    if _major_minor(version)[0] >= 11:
        # 11.x: every network is strongly typed; STRONGLY_TYPED is "deprecated ... retained for
        # API compatibility but is ignored" (11.0 Builder page, module docstring), so it is not
        # passed, and its removal in a later major changes nothing here. (Its value moved too:
        # 1 in 10.x, 0 in 11.x, where 1 is PREFER_JIT_PYTHON_PLUGINS: include/NvInfer.h.)
        return 0
    # 10.x: strong typing is opt-in through this flag (10.x Builder page).
    if strongly_typed is None:
        raise EngineError(f"tensorrt backend: TensorRT {version} has no STRONGLY_TYPED network flag")
    return 1 << strongly_typed


def open_tensorrt(
    source: ModelSource,
    device: torch.device,
    precision: str | None,
    input_shape: tuple[int, int, int, int] | None,
    cache_dir: Path | None = None,
    calibration_dir: Path | None = None,
) -> TensorRTBackend:
    """A TensorRT backend for ``source``: its engine file, or a cached / freshly built engine.

    Args:
        precision: ``None``: an ONNX file's own graph precision, fp16 for a model file, an
            engine file's own. Otherwise it must be what an ONNX or engine file holds.
        calibration_dir: int8 from a model file: the images the int8 export is calibrated on.

    Raises:
        EngineError: no TensorRT, no CUDA device, an explicit engine file for another GPU or
            TensorRT version, int8 from a model file without calibration images, a failed build.
        ConfigError: a precision other than an ONNX or engine file's own.
        InputError: no fixed input size.
    """
    trt = import_tensorrt()
    if device.type != "cuda" or not torch.cuda.is_available():
        raise EngineError(f"tensorrt backend: needs a CUDA device, got {device}")
    gpu = torch.cuda.get_device_name(device)
    if source.kind == "engine":
        assert source.engine is not None
        check_engine_runs_here(source.engine.key, gpu, trt.__version__, str(source.path))
        built = source.engine.key.precision
        if precision is not None and precision != built:
            raise ConfigError(f"precision: {precision} asked for, but {source.path} is an {built} engine")
        return TensorRTBackend(source.engine, device, str(source.path))
    if source.kind == "memory":
        raise EngineError(
            "tensorrt backend: needs a model file (.pt or .onnx), its engine is cached beside it"
        )
    assert source.path is not None
    proto = read_onnx(source.path)[0] if source.kind == "onnx" else None
    shape = _engine_shape(str(source.path), proto, input_shape)
    if proto is None:  # a model file, exported in the precision asked for
        precision = precision or DEFAULT_PRECISION
        if precision == "int8" and calibration_dir is None:
            raise EngineError(
                "tensorrt backend: int8 from a model file needs calibration images "
                "(--calibration-dir DIR, calibration_dir=)"
            )
    # An ONNX file comes back as it is (ConfigError if `precision` is not its graph's).
    onnx_path = cached_onnx(source, (shape[0], shape[2], shape[3]), cache_dir, precision, calibration_dir)
    if proto is not None:
        precision = graph_precision(proto)
    assert precision is not None
    key = EngineKey(
        source_kind="pt" if source.kind == "checkpoint" else "onnx", source_sha256=source.sha256,
        onnx_sha256=source.sha256 if onnx_path == source.path else file_sha256(onnx_path),
        gpu=gpu, tensorrt=trt.__version__, precision=precision, input_shape=shape,
    )  # fmt: skip
    path = engine_path(source.cache_dir(cache_dir), source.path.stem, key)
    cfg = replace(source.cfg, input=replace(source.cfg.input, height=shape[2], width=shape[3]))

    def build() -> bytes:
        return build_engine(onnx_path, key, device, log.info)

    engine = load_or_build(path, key, cfg, build)
    try:
        return TensorRTBackend(engine, device, str(path))
    except _Undeserializable as error:  # an engine TensorRT refuses despite a matching key
        log.warning("%s: rebuilding", error)
        engine = EngineFile(key, cfg, build())
        write_engine_file(path, key, cfg, engine.engine)
        return TensorRTBackend(engine, device, str(path))


def _engine_shape(
    where: str, proto: Any, input_shape: tuple[int, int, int, int] | None
) -> tuple[int, int, int, int]:
    """The one input shape to build for: a static ONNX graph's (``proto``) own, else the requested one."""
    if proto is not None:
        static = static_input_shape(proto)
        if all(d is not None for d in static):
            if input_shape is not None:
                check_input_shape(static, input_shape, where)
            return tuple(static)  # type: ignore[return-value]
    if input_shape is None:
        raise InputError(
            "tensorrt backend: an engine has one input size: set it (Predictor(input_size=(H, W)), "
            "input.height / input.width in the config, --height / --width)"
        )
    return input_shape


def build_engine(
    onnx_path: Path, key: EngineKey, device: torch.device, progress: Callable[[str], None]
) -> bytes:
    """Build a serialized, strongly typed engine from ``onnx_path`` for ``key``'s input shape.

    The engine's precision is the graph's (``key.precision`` only names it).
    """
    trt = import_tensorrt()
    started = time.monotonic()
    progress(f"building a TensorRT engine from {onnx_path} ({describe_key(key)}); this takes minutes, once")
    logger = trt.Logger(trt.Logger.WARNING)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    with torch.cuda.device(device):
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt.__version__, None if flag is None else int(flag)))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)).replace("\n", " ") for i in range(parser.num_errors))
            raise EngineError(f"{onnx_path}: TensorRT's ONNX parser refused it ({errors[:300]})")
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, key.input_shape, key.input_shape, key.input_shape)
        config.add_optimization_profile(profile)
        # float32 in the graph means IEEE float32: TF32 is on by default ("Enabled by default",
        # BuilderFlag.TF32, still a member in 11.x). Clearing it is allowed on strongly typed
        # networks on both majors: trtexec --stronglyTyped drops only the FP16/BF16/INT8/FP8/INT4
        # flags and still honours --noTF32 in v10.3.0 (samples/common/sampleOptions.cpp), and
        # v11.1 clears kTF32 on its always strongly typed networks (samples/common/sampleEngines.cpp).
        tf32 = getattr(trt.BuilderFlag, "TF32", None)
        if tf32 is not None:
            config.clear_flag(tf32)
        if hasattr(trt, "IProgressMonitor"):  # 10.0+ and 11.x (ProgressMonitor page)
            config.progress_monitor = _progress_monitor(trt, progress)
        serialized = builder.build_serialized_network(network, config)  # None on failure, 10 and 11
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT could not build an engine (its log above says why)")
    progress(f"built the engine in {time.monotonic() - started:.0f} s")
    return bytes(serialized)


class TensorRTBackend:
    """Runs a deserialized engine on its own CUDA stream; I/O are torch CUDA tensors.

    ``__call__`` hands work over by stream order, without a host sync: the engine's stream
    waits for the caller's current stream (the input is ready), runs the engine, and the
    caller's current stream then waits for the engine's (the outputs are ready), so kernels the
    caller queues next see finished outputs. TensorRT asks for a non-default stream
    ("Using default stream may lead to performance issues due to additional
    cudaDeviceSynchronize() calls", ``execute_async_v3``).

    Raises:
        EngineError: TensorRT cannot deserialize the engine or make a context for it, or its
            I/O are not ours.
    """

    name = "tensorrt"

    def __init__(self, engine: EngineFile, device: torch.device, where: str) -> None:
        trt = import_tensorrt()
        self.device = (
            device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
        )
        self.precision = engine.key.precision
        self.input_shape = engine.key.input_shape
        self.where = where
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):  # the engine's memory and kernels belong to this GPU
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(engine.engine)  # None on failure
            if self.engine is None:
                raise _Undeserializable(f"{where}: TensorRT {trt.__version__} cannot deserialize this engine")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise EngineError(
                    f"{where}: TensorRT could not create an execution context (out of GPU memory?)"
                )
            self.stream = torch.cuda.Stream(self.device)
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            if sorted(names) != sorted([INPUT_NAME, *OUTPUT_NAMES]):
                raise EngineError(f"{where}: engine I/O {names} are not those of rt-panoptic-export's graphs")
            # set_input_shape, set_tensor_address and execute_async_v3 return False on failure
            # (bool in pyCore.cpp at v10.3.0 and v11.1); each is checked.
            if not self.context.set_input_shape(INPUT_NAME, self.input_shape):
                raise EngineError(
                    f"{where}: TensorRT refused input shape {list(self.input_shape)} for {INPUT_NAME!r}"
                )
        self._outputs = [
            (name, tuple(self.context.get_tensor_shape(name)), _torch_dtype(self.engine, name, where))
            for name in OUTPUT_NAMES
        ]

    def __call__(self, images: Tensor) -> HeadOutputs:
        """uint8 ``[N, 3, H, W]`` CUDA tensor (the engine's shape) -> ``HeadOutputs`` on the GPU.

        The outputs are ready on the caller's current stream when this returns.
        """
        if images.device != self.device:
            raise InputError(f"images: on {images.device}, the engine runs on {self.device}")
        check_input_shape(self.input_shape, tuple(images.shape), self.where)
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream(self.device)
            images = images.contiguous()  # the engine takes dense NCHW (a copy, if any, on `caller`)
            self.stream.wait_stream(caller)  # the input is written
            # Allocated on `caller`, where they are used next; record_stream keeps the caching
            # allocator from handing their memory out again before the engine is done with it.
            images.record_stream(self.stream)
            self._bind(INPUT_NAME, images)
            outputs = []
            for name, shape, dtype in self._outputs:
                out = torch.empty(shape, dtype=dtype, device=self.device)  # fresh: callers may keep them
                out.record_stream(self.stream)
                self._bind(name, out)
                outputs.append(out)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError(f"{self.where}: TensorRT failed to enqueue the engine")
            caller.wait_stream(self.stream)  # the outputs are written before the caller reads them
        return unflatten_outputs(outputs)

    def _bind(self, name: str, tensor: Tensor) -> None:
        if not self.context.set_tensor_address(name, tensor.data_ptr()):
            raise EngineError(f"{self.where}: TensorRT refused the address of tensor {name!r}")


class _Undeserializable(EngineError):
    """TensorRT refused an engine's bytes: a cached one is rebuilt (other failures are not)."""


_TORCH_DTYPES = {
    "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
    "INT64": torch.int64, "UINT8": torch.uint8,
}  # fmt: skip


def _torch_dtype(engine: Any, name: str, where: str) -> torch.dtype:
    dtype = engine.get_tensor_dtype(name).name
    if dtype not in _TORCH_DTYPES:
        raise EngineError(f"{where}: output {name!r} is {dtype}, which has no torch dtype here")
    return _TORCH_DTYPES[dtype]


def _progress_monitor(trt: Any, report: Callable[[str], None]) -> Any:
    """A ``trt.IProgressMonitor`` that reports the builder's top-level phases."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                report(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # keep building

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()

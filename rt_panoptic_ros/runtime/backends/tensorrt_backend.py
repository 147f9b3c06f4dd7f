"""TensorRT (10.x Python API): engine build from the exported ONNX graph, and execution with
torch CUDA tensors bound as the engine's I/O on torch's current stream.

``tensorrt`` is imported only when an engine is built or run, so the package imports
without it. Which engine to use and when to rebuild is :mod:`~rt_panoptic_ros.runtime.engine_cache`'s
business (pure Python, tested everywhere); what is here needs a GPU with TensorRT and is kept
to the API calls.

Precision: ``fp16`` (default) lets TensorRT pick FP16 kernels where faster; ``fp32`` also turns
TF32 off, so FP32 means IEEE FP32 (TensorRT enables TF32 by default on Ampere and newer);
``int8`` calibrates on a folder of images (entropy calibrator, FP16 fallback for layers
without INT8 kernels). Inputs and outputs stay uint8 / float32 in every precision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rt_panoptic_ros.errors import EngineError, InputError
from rt_panoptic_ros.model import HeadOutputs
from rt_panoptic_ros.runtime.calibration import (
    calibration_batches,
    calibration_fingerprint,
    calibration_images,
)
from rt_panoptic_ros.runtime.engine_cache import (
    EngineFile,
    EngineKey,
    check_engine_runs_here,
    check_input_shape,
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
from rt_panoptic_ros.runtime.sources import ModelSource, cached_onnx

log = logging.getLogger("rt_panoptic_ros.runtime")

MIN_TENSORRT_MAJOR = 10


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or one clear :class:`EngineError` saying why not."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(
            "tensorrt backend: the tensorrt Python package is not installed (needs TensorRT "
            f"{MIN_TENSORRT_MAJOR}.x and an NVIDIA GPU)"
        ) from None
    if int(trt.__version__.split(".")[0]) < MIN_TENSORRT_MAJOR:
        raise EngineError(
            f"tensorrt backend: TensorRT {trt.__version__} found, needs {MIN_TENSORRT_MAJOR}.x or newer"
        )
    return trt


def open_tensorrt(
    source: ModelSource,
    device: torch.device,
    precision: str | None,
    input_shape: tuple[int, int, int, int] | None,
    cache_dir: Path | None = None,
    calibration_dir: Path | None = None,
) -> TensorRTBackend:
    """A TensorRT backend for ``source``: its engine file, or a cached / freshly built engine.

    Raises:
        EngineError: no TensorRT, no CUDA device, an explicit engine file for another GPU or
            TensorRT version, a failed build. InputError: no fixed input size.
    """
    trt = import_tensorrt()
    if device.type != "cuda" or not torch.cuda.is_available():
        raise EngineError(f"tensorrt backend: needs a CUDA device, got {device}")
    gpu = torch.cuda.get_device_name(device)
    if source.kind == "engine":
        assert source.engine is not None
        check_engine_runs_here(source.engine.key, gpu, trt.__version__, str(source.path))
        return TensorRTBackend(source.engine, device, str(source.path))
    if source.kind == "memory":
        raise EngineError(
            "tensorrt backend: needs a model file (.pt or .onnx), its engine is cached beside it"
        )
    precision = precision or "fp16"
    shape = _engine_shape(source, input_shape)
    onnx_path = cached_onnx(source, (shape[0], shape[2], shape[3]), cache_dir)
    files = calibration_images(calibration_dir) if precision == "int8" and calibration_dir else []
    if precision == "int8" and not files:
        raise EngineError("tensorrt backend: int8 needs calibration images (--calib DIR, calibration_dir=)")
    key = EngineKey(
        file_sha256(onnx_path), gpu, trt.__version__, precision, shape,
        calibration_fingerprint(files) if files else "",
    )  # fmt: skip
    folder = source.cache_dir(cache_dir)
    assert source.path is not None
    path = engine_path(folder, source.path.stem, precision, shape)
    cfg = replace(source.cfg, input=replace(source.cfg.input, height=shape[2], width=shape[3]))

    def build() -> bytes:
        # The calibration table depends on the graph and the images: both are in its name.
        tag = f"{key.onnx_sha256[:8]}{key.calibration[:8]}"
        calibration_cache = path.with_name(f"{path.stem}.{tag}.calibration") if files else None
        return build_engine(onnx_path, key, device, files, calibration_cache, log.info)

    engine = load_or_build(path, key, cfg, build)
    try:
        return TensorRTBackend(engine, device, str(path))
    except EngineError as error:  # an engine TensorRT refuses despite a matching key
        log.warning("%s: rebuilding", error)
        engine = EngineFile(key, cfg, build())
        write_engine_file(path, key, cfg, engine.engine)
        return TensorRTBackend(engine, device, str(path))


def _engine_shape(
    source: ModelSource, input_shape: tuple[int, int, int, int] | None
) -> tuple[int, int, int, int]:
    """The one input shape to build for: a static ONNX file's own, else the requested one."""
    if source.kind == "onnx":
        assert source.path is not None
        proto, _ = read_onnx(source.path)
        static = static_input_shape(proto)
        if all(d is not None for d in static):
            if input_shape is not None:
                check_input_shape(static, input_shape, str(source.path))
            return tuple(static)  # type: ignore[return-value]
    if input_shape is None:
        raise InputError(
            "tensorrt backend: an engine has one input size: set it (Predictor(input_size=(H, W)), "
            "input.height / input.width in the config, --height / --width)"
        )
    return input_shape


def build_engine(
    onnx_path: Path,
    key: EngineKey,
    device: torch.device,
    calibration_files: list[Path],
    calibration_cache: Path | None,
    progress: Callable[[str], None],
) -> bytes:
    """Build a serialized engine from ``onnx_path`` for ``key``'s precision and input shape."""
    trt = import_tensorrt()
    started = time.monotonic()
    progress(f"building a TensorRT engine from {onnx_path} ({describe_key(key)}); this takes minutes, once")
    logger = trt.Logger(trt.Logger.WARNING)
    with torch.cuda.device(device):
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"{onnx_path}: TensorRT's ONNX parser refused it ({errors[:300]})")
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, key.input_shape, key.input_shape, key.input_shape)
        config.add_optimization_profile(profile)
        if key.precision == "fp32":
            config.clear_flag(trt.BuilderFlag.TF32)
        else:
            config.set_flag(trt.BuilderFlag.FP16)
        if key.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            batches = calibration_batches(calibration_files, key.input_shape)
            config.int8_calibrator = _calibrator(trt, batches, key.input_shape, device, calibration_cache)
        if hasattr(trt, "IProgressMonitor"):
            config.progress_monitor = _progress_monitor(trt, progress)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT could not build an engine (its log above says why)")
    progress(f"built the engine in {time.monotonic() - started:.0f} s")
    return bytes(serialized)


class TensorRTBackend:
    """Runs a deserialized engine; I/O are torch CUDA tensors, work goes on torch's current stream.

    Raises:
        EngineError: TensorRT cannot deserialize the engine, or its I/O are not ours.
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
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(engine.engine)
            if self.engine is None:
                raise EngineError(f"{where}: TensorRT {trt.__version__} cannot deserialize this engine")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != sorted([INPUT_NAME, *OUTPUT_NAMES]):
            raise EngineError(f"{where}: engine I/O {names} are not those of rt-panoptic-export's graphs")
        self.context.set_input_shape(INPUT_NAME, self.input_shape)
        self._outputs = [
            (
                name,
                tuple(self.context.get_tensor_shape(name)),
                _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name],
            )
            for name in OUTPUT_NAMES
        ]

    def __call__(self, images: Tensor) -> HeadOutputs:
        """uint8 ``[N, 3, H, W]`` CUDA tensor (the engine's shape) -> ``HeadOutputs`` on the GPU."""
        if images.device != self.device:
            raise InputError(f"images: on {images.device}, the engine runs on {self.device}")
        check_input_shape(self.input_shape, tuple(images.shape), self.where)
        images = images.contiguous()  # the engine takes dense NCHW
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        outputs = []
        for name, shape, dtype in self._outputs:
            out = torch.empty(shape, dtype=dtype, device=self.device)  # fresh: callers may keep them
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"{self.where}: TensorRT failed to enqueue the engine")
        # Outputs are ready on `stream`; the decoder's kernels queue behind them there.
        return unflatten_outputs(outputs)


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "UINT8": torch.uint8}


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


def _calibrator(
    trt: Any, batches: Any, shape: tuple[int, ...], device: torch.device, cache: Path | None
) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` feeding ``batches`` (uint8 CPU tensors) from one GPU buffer."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.buffer = torch.empty(shape, dtype=torch.uint8, device=device)

        def get_batch_size(self) -> int:
            return shape[0]

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            self.buffer.copy_(batch)
            torch.cuda.current_stream(device).synchronize()
            return [self.buffer.data_ptr()]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache is not None and cache.exists() else None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                cache.write_bytes(bytes(data))

    return Calibrator()

"""ONNX Runtime execution of an exported graph: the CPU here, CUDA / TensorRT execution
providers where ``onnxruntime-gpu`` is installed.

Precision is the graph's (:mod:`~rt_panoptic_ros.runtime.precision`): an int8 Q/DQ file runs
on the CPU with integer kernels (its activations re-expressed as uint8 for ORT's x86 kernels,
:func:`~rt_panoptic_ros.runtime.precision.int8_for_cpu`), an fp16 file where its ops have
fp16 kernels.

Inputs and outputs are torch tensors bound to the session by address (I/O binding), on the
CPU and on CUDA alike: nothing is copied between torch and ONNX Runtime, and the decoder reads
the outputs where they are. Output buffers are fresh per call (torch's caching allocator makes
that cheap), so outputs a caller keeps are never overwritten.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import ConfigError, EngineError, InputError
from rt_panoptic_ros.model import HeadOutputs
from rt_panoptic_ros.runtime.backends.input_checks import check_input_shape
from rt_panoptic_ros.runtime.export import INPUT_NAME, OUTPUT_NAMES, output_shapes, unflatten_outputs
from rt_panoptic_ros.runtime.precision import graph_precision, int8_for_cpu

log = logging.getLogger("rt_panoptic_ros.runtime")


class OnnxRuntimeBackend:
    """Runs an ONNX file (or serialized graph) of the network with ONNX Runtime.

    Args:
        onnx_graph: path of an exported file, or its bytes (an in-memory export).
        cfg: the model's config (output channel counts).
        device: ``cpu``, or a CUDA device (needs the CUDA execution provider).
        precision: what the graph must hold (``fp32``, ``fp16``, ``int8``); ``None``: whatever
            it holds. Precision is never changed here: it is the graph's.
        cache_dir: where the TensorRT execution provider keeps its engines.
        where: names the graph in messages.

    Raises:
        EngineError: onnxruntime is not installed, has no provider for ``device``, or cannot
            load the graph. ConfigError: a graph of another precision than ``precision``.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_graph: Path | bytes,
        cfg: Config,
        device: torch.device,
        precision: str | None = None,
        cache_dir: Path | None = None,
        where: str = "ONNX graph",
    ) -> None:
        ort = import_onnxruntime()
        self.device = device
        self.cfg = cfg
        self.where = where
        providers = execution_providers(device, cache_dir)
        try:
            proto = (
                onnx.load_from_string(onnx_graph)
                if isinstance(onnx_graph, bytes)
                else onnx.load(str(onnx_graph))
            )
        except Exception as error:  # protobuf's DecodeError and onnx's own: all mean "not a graph"
            raise EngineError(f"{where}: onnxruntime cannot load it ({type(error).__name__})") from None
        self.precision = graph_precision(proto)
        if precision is not None and precision != self.precision:
            raise ConfigError(
                f"precision: {precision} asked for, but {where} is an {self.precision} graph "
                f"(export one with rt-panoptic-export --precision {precision})"
            )
        if self.precision == "int8" and device.type == "cpu":
            proto = int8_for_cpu(proto)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's idle worker threads busy-wait after a run by default, taking the cores the
        # decoder (torch) runs on next: on 2 cores decode took 17 / 21 ms instead of 9 / 8 ms
        # (small / TRI preset, 512x1024; benchmarks/backends_cpu.json) with spinning on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
        except Exception as error:  # ORT raises its own exception types for a bad graph
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise EngineError(f"{where}: onnxruntime cannot load it ({reason})") from None
        log.info("onnxruntime %s: %s", ort.__version__, ", ".join(self.session.get_providers()))
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if [i.name for i in inputs] != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
            raise EngineError(f"{where}: inputs/outputs are not those of rt-panoptic-export's graphs")
        # Symbolic dimensions (a dynamic export) come back as strings: they take any size.
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)

    def __call__(self, images: Tensor) -> HeadOutputs:
        """uint8 ``[N, 3, H, W]`` on :attr:`device` -> float32 ``HeadOutputs`` there."""
        if images.device.type != self.device.type:
            raise InputError(f"images: on {images.device}, the onnxruntime backend runs on {self.device}")
        check_input_shape(self.input_shape, tuple(images.shape), self.where)
        images = images.contiguous()  # the Predictor's NHWC view -> the graph's dense NCHW
        kind, index = self.device.type, self.device.index or 0
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, kind, index, np.uint8, list(images.shape), images.data_ptr())
        n, _, h, w = images.shape
        outputs = []
        for name, shape in output_shapes(self.cfg, n, h, w).items():
            out = torch.empty(shape, dtype=torch.float32, device=images.device)
            binding.bind_output(name, kind, index, np.float32, list(shape), out.data_ptr())
            outputs.append(out)
        if kind == "cuda":
            # ORT runs on its own CUDA stream: the input must be complete before it starts.
            # run_with_iobinding returns once its stream is done, so the outputs are ready.
            torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return unflatten_outputs(outputs)


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or one clear :class:`EngineError`."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineError("onnxruntime backend: the onnxruntime package is not installed") from None
    return ort


def execution_providers(device: torch.device, cache_dir: Path | None = None) -> list:
    """Execution providers for ``device``, best first, among those this onnxruntime has.

    Raises:
        EngineError: none for ``device``.
    """
    available = import_onnxruntime().get_available_providers()
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type != "cuda" or "CUDAExecutionProvider" not in available:
        raise EngineError(
            f"onnxruntime backend: no execution provider for {device} in this onnxruntime "
            f"(it has {', '.join(available)}; install onnxruntime-gpu for CUDA)"
        )
    index = device.index or 0
    providers: list = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if "TensorrtExecutionProvider" in available:
        # No trt_fp16_enable / trt_int8_enable: those are weak typing; the graph's types rule.
        trt_options: dict = {"device_id": index}
        if cache_dir is not None:
            trt_options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)}
        providers.insert(0, ("TensorrtExecutionProvider", trt_options))
    return providers

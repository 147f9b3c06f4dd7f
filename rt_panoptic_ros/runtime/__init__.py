"""Inference runtime: the :class:`Predictor` over interchangeable backends (``backends/``:
torch, onnxruntime, tensorrt, auto), ONNX export (``export.py``), the TensorRT engine cache
(``engine_cache.py``) and the per-stage benchmark (``bench.py``). See docs/deployment.md."""

from rt_panoptic_ros.runtime.backends import BACKENDS, BackendOptions, create_backend
from rt_panoptic_ros.runtime.export import export_onnx
from rt_panoptic_ros.runtime.predictor import Predictor

__all__ = ["BACKENDS", "BackendOptions", "Predictor", "create_backend", "export_onnx"]

"""PyTorch execution of :class:`RTPanoNet`: CPU (float32) or CUDA (fp16 autocast by default,
channels_last, optional CUDA-graph replay for a fixed input shape), always of a copy with the
backbone's frozen BatchNorm folded into its convolutions (:func:`fold_frozen_batchnorm`)."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from rt_panoptic_ros.errors import ConfigError, InputError
from rt_panoptic_ros.model import HeadOutputs, RTPanoNet, fold_frozen_batchnorm

log = logging.getLogger("rt_panoptic_ros.runtime")

TORCH_PRECISIONS: tuple[str, ...] = ("fp32", "fp16")


class TorchBackend:
    """PyTorch eager (or CUDA-graph) execution of ``model`` on ``device``.

    Runs :attr:`model`, a copy of ``model`` in eval mode with the frozen BatchNorm folded into
    the convolutions (:func:`~rt_panoptic_ros.model.fold_frozen_batchnorm`): fewer ops on every
    device, and under fp16 the backbone's activations stay fp16 (an unfolded FrozenBatchNorm2d,
    with float32 buffers, returns float32). Its outputs differ from ``model``'s by float
    rounding only. ``model`` itself is not changed or moved.

    Args:
        precision: ``"fp32"`` or ``"fp16"`` (CUDA only: autocast, so the convolutions run in
            half precision and numerically sensitive ops stay in float32); default ``"fp16"``
            on CUDA, ``"fp32"`` on the CPU.
        cuda_graph: capture the network once per input shape and replay it: no Python or
            kernel-launch overhead per frame. Only the network is captured; the decoder's
            output sizes depend on the data (NMS, instance counts), which a graph cannot hold.
            The returned tensors are the graph's static outputs, overwritten by the next call.
    """

    name = "torch"

    def __init__(
        self, model: RTPanoNet, device: torch.device, precision: str | None = None, cuda_graph: bool = False
    ) -> None:
        cuda = device.type == "cuda"
        precision = precision or ("fp16" if cuda else "fp32")
        if precision not in TORCH_PRECISIONS:
            raise ConfigError(f"precision: {precision!r} for the torch backend, expected fp32 or fp16")
        if precision == "fp16" and not cuda:
            raise ConfigError(
                "precision: fp16 needs a CUDA device for the torch backend (use fp32 on the CPU)"
            )
        if cuda_graph and not cuda:
            raise ConfigError("cuda_graph: needs a CUDA device")
        self.device = concrete_device(device)
        self.precision = precision
        # Fold first, then move the copy: the caller's network stays where it is, and the
        # device only ever holds the folded copy.
        self.model = fold_frozen_batchnorm(model).to(self.device)
        if cuda:
            # The Predictor hands over NHWC memory viewed as NCHW: channels_last weights make
            # cuDNN pick its NHWC kernels with no layout conversion.
            self.model = self.model.to(memory_format=torch.channels_last)
        self._graph = _CudaGraph(self._forward) if cuda_graph else None

    def __call__(self, images: Tensor) -> HeadOutputs:
        """uint8 ``[N, 3, H, W]`` on :attr:`device` -> ``HeadOutputs`` there (fp16 under fp16)."""
        if images.device != self.device:
            raise InputError(f"images: on {images.device}, the torch backend runs on {self.device}")
        if self._graph is not None:
            return self._graph(images)
        return self._forward(images)

    @torch.inference_mode()
    def _forward(self, images: Tensor) -> HeadOutputs:
        if self.precision == "fp16":
            with torch.autocast("cuda", dtype=torch.float16):
                return self.model(images)
        return self.model(images)


def concrete_device(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:<current>``, so that it compares equal to a tensor's device."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class _CudaGraph:
    """Replays one captured CUDA graph of ``fn``; captures again when the input shape changes."""

    _WARMUP = 3  # eager runs on a side stream before capture (cuDNN autotuning, allocator)

    def __init__(self, fn) -> None:
        self.fn = fn
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_input: Tensor | None = None
        self.static_output: HeadOutputs | None = None

    def __call__(self, images: Tensor) -> HeadOutputs:
        if self.static_input is None or self.static_input.shape != images.shape:
            self._capture(images)
        assert self.graph is not None and self.static_input is not None and self.static_output is not None
        self.static_input.copy_(images)
        self.graph.replay()
        return self.static_output

    def _capture(self, images: Tensor) -> None:
        log.info("capturing a CUDA graph of the network for input %s", "x".join(map(str, images.shape)))
        self.static_input = torch.empty_like(images)  # keeps the channels_last strides
        self.static_input.copy_(images)
        side = torch.cuda.Stream(images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(side):
            for _ in range(self._WARMUP):
                self.fn(self.static_input)
        torch.cuda.current_stream(images.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = self.fn(self.static_input)

"""Backends: what runs the network. Each maps uint8 ``[N, 3, H, W]`` RGB on its device to
:class:`~rt_panoptic_ros.model.HeadOutputs` on that device, so the decoder reads the outputs
where they are, whichever engine made them.

Only the PyTorch backend lives here so far; ONNX Runtime and TensorRT slot in behind
:func:`create_backend` with the same call signature.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from rt_panoptic_ros.errors import ConfigError
from rt_panoptic_ros.model import HeadOutputs, RTPanoNet

BACKENDS: tuple[str, ...] = ("torch",)


class Backend(Protocol):
    """Runs the network: uint8 ``[N, 3, H, W]`` RGB on :attr:`device` -> ``HeadOutputs`` there."""

    name: str
    device: torch.device

    def __call__(self, images: Tensor) -> HeadOutputs: ...


class TorchBackend:
    """PyTorch eager execution of :class:`RTPanoNet` on the CPU or a CUDA device."""

    name = "torch"

    def __init__(self, model: RTPanoNet, device: torch.device) -> None:
        self.device = device
        self.model = model.to(device).eval()

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> HeadOutputs:
        return self.model(images)


def create_backend(name: str, model: RTPanoNet, device: torch.device) -> Backend:
    """The backend ``name`` (one of :data:`BACKENDS`) running ``model`` on ``device``.

    Raises:
        ConfigError: an unknown backend name.
    """
    if name == "torch":
        return TorchBackend(model, device)
    raise ConfigError(f"backend: {name!r}, expected one of {', '.join(BACKENDS)}")

"""Predictor: one numpy RGB image in, one :class:`~rt_panoptic_ros.panoptic.PanopticResult` out.

It owns the whole inference path of DESIGN.md: the image goes to the device as uint8 (a
zero-copy view until then), is resized to the configured input size if there is one, padded
to a multiple of 128, run by a backend, decoded on the same device, cropped (and resized)
back to the image's own size, and copied to the host once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rt_panoptic_ros.config import SIZE_DIVISIBILITY, Config
from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.model import RTPanoNet, load_model
from rt_panoptic_ros.panoptic import PanopticResult, decode
from rt_panoptic_ros.panoptic.result import resize_result
from rt_panoptic_ros.runtime.backends import Backend, create_backend


class Predictor:
    """Panoptic segmentation of numpy RGB images with one model.

    Args:
        model: a model file (``load_model``) or an :class:`RTPanoNet`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        backend: which engine runs the network (:data:`~rt_panoptic_ros.runtime.backends.BACKENDS`).
        cfg: decoder thresholds and input size to use instead of the model's own
            (``model.cfg``); the architecture and classes always come from the model.

    Example:
        >>> predictor = Predictor("models/tri_cityscapes.pt")  # doctest: +SKIP
        >>> result = predictor(rgb)  # rgb: uint8 [H, W, 3]  # doctest: +SKIP
        >>> result.semantic.shape == rgb.shape[:2]  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        model: str | Path | RTPanoNet,
        device: str | torch.device = "cpu",
        backend: str = "torch",
        cfg: Config | None = None,
    ) -> None:
        self.device = torch.device(device)
        network = model if isinstance(model, RTPanoNet) else load_model(model, "cpu")
        self.cfg = cfg if cfg is not None else network.cfg
        self.backend: Backend = create_backend(backend, network, self.device)

    def __call__(self, image: np.ndarray) -> PanopticResult:
        """Segment one ``[H, W, 3]`` uint8 RGB image; the result's maps are ``[H, W]`` on the CPU."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[PanopticResult]:
        """Segment several images (any sizes) in one network call; results on the CPU."""
        if len(images) == 0:
            return []
        tensors = [self._to_device(image, k) for k, image in enumerate(images)]
        batch, content_sizes = self.prepare(tensors)
        outputs = self.backend(batch)
        results = decode(outputs, self.cfg, content_sizes)
        original_sizes = [tuple(t.shape[-2:]) for t in tensors]
        return [
            resize_result(r, size).to("cpu") if tuple(r.semantic.shape) != size else r.to("cpu")
            for r, size in zip(results, original_sizes, strict=True)
        ]

    def prepare(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Resize (if an input size is configured) and pad ``[3, H, W]`` uint8 images into a batch.

        Returns:
            uint8 ``[N, 3, H', W']`` (H', W' multiples of 128; the configured size if any) and
            each image's ``(h, w)`` in its top-left corner.
        """
        target = (self.cfg.input.height, self.cfg.input.width)
        resized = [self._resize(image, target) if all(target) else image for image in images]
        sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in resized]
        if all(target):
            padded = target
        else:
            padded = (_round_up(max(h for h, _ in sizes)), _round_up(max(w for _, w in sizes)))
        # Zero padding right and below; channels_last keeps each HWC image a plain copy.
        batch = torch.zeros((len(resized), *padded, 3), dtype=torch.uint8, device=self.device)
        batch = batch.permute(0, 3, 1, 2)  # [N, 3, H', W'] viewed over NHWC memory
        for k, (image, (h, w)) in enumerate(zip(resized, sizes, strict=True)):
            batch[k, :, :h, :w] = image
        return batch, sizes

    @staticmethod
    def _resize(image: Tensor, target: tuple[int, int]) -> Tensor:
        """Scale ``[3, H, W]`` uint8 to fit ``target`` keeping its aspect ratio."""
        h, w = image.shape[-2:]
        scale = min(target[0] / h, target[1] / w)
        size = (max(1, min(target[0], round(h * scale))), max(1, min(target[1], round(w * scale))))
        if size == (h, w):
            return image
        resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)
        return resized[0].round_().clamp_(0, 255).to(torch.uint8)

    def _to_device(self, image: np.ndarray, index: int) -> Tensor:
        """``[H, W, 3]`` uint8 numpy -> ``[3, H, W]`` uint8 on the device (a view until the copy)."""
        if not isinstance(image, np.ndarray):
            raise InputError(f"image {index}: expected a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                f"image {index}: expected uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"image {index}: empty ({image.shape[0]}x{image.shape[1]})")
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        # HWC viewed as CHW: channels_last for free, no copy on the CPU.
        return tensor.permute(2, 0, 1)


def _round_up(value: int) -> int:
    return math.ceil(value / SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY

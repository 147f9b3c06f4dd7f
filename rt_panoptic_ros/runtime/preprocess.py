"""Fitting uint8 images to a network input: aspect-preserving resize, zero padding, batching.

Shared by the :class:`~rt_panoptic_ros.runtime.Predictor` and INT8 calibration, so that a
calibrated engine sees exactly the pixels it will see at run time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rt_panoptic_ros.config import SIZE_DIVISIBILITY


def fit(image: Tensor, target: tuple[int, int]) -> Tensor:
    """Scale ``[3, H, W]`` uint8 to fit inside ``target`` keeping its aspect ratio (bilinear)."""
    h, w = image.shape[-2:]
    scale = min(target[0] / h, target[1] / w)
    size = (max(1, min(target[0], round(h * scale))), max(1, min(target[1], round(w * scale))))
    if size == (h, w):
        return image
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)
    return resized[0].round_().clamp_(0, 255).to(torch.uint8)


def pad_batch(images: Sequence[Tensor], size: tuple[int, int], device: torch.device) -> Tensor:
    """Place ``[3, h, w]`` uint8 images top-left in a zero ``[N, 3, H, W]`` batch (``size`` = H, W).

    The batch is NHWC memory viewed as NCHW (channels_last), so copying each HWC image in
    is a plain copy.
    """
    batch = torch.zeros((len(images), *size, 3), dtype=torch.uint8, device=device)
    batch = batch.permute(0, 3, 1, 2)  # [N, 3, H, W] viewed over NHWC memory
    for k, image in enumerate(images):
        h, w = image.shape[-2:]
        batch[k, :, :h, :w] = image
    return batch


def round_up(value: int) -> int:
    """The smallest multiple of 128 (the stride of P7) that is >= ``value``."""
    return math.ceil(value / SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY

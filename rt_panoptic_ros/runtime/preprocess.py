"""Fitting uint8 images to a network input: aspect-preserving resize, zero padding, batching.

Shared by the :class:`~rt_panoptic_ros.runtime.Predictor` and INT8 calibration, so that a
calibrated engine sees exactly the pixels it will see at run time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from rt_panoptic_ros.config import SIZE_DIVISIBILITY
from rt_panoptic_ros.panoptic.sampling import bilinear


def fit(image: Tensor, target: tuple[int, int]) -> Tensor:
    """Scale ``[3, H, W]`` uint8 to fit inside ``target`` keeping its aspect ratio (bilinear).

    The arithmetic of ``F.interpolate(image.float(), mode="bilinear", align_corners=False)``,
    rounded to uint8, but only the two rows and two columns each output pixel reads are taken
    from the image, as uint8, before anything is converted to float: memory is that of the
    output (a few MB), not four bytes per pixel of the image (768 MB for 8000x8000). Any device.
    """
    h, w = image.shape[-2:]
    scale = min(target[0] / h, target[1] / w)
    size = (max(1, min(target[0], round(h * scale))), max(1, min(target[1], round(w * scale))))
    if size == (h, w):
        return image
    rows, fy = _bilinear_taps(h, size[0], image.device)  # [2 * h'], [h']
    cols, fx = _bilinear_taps(w, size[1], image.device)  # [2 * w'], [w']
    fy = fy[:, None]  # [h', 1]
    taps = image.index_select(1, rows).index_select(2, cols).float()  # [3, 2h', 2w']
    top, bottom = taps.view(3, 2, size[0], 2 * size[1]).unbind(1)  # [3, h', 2w'] each
    left_top, right_top = top.view(3, size[0], 2, size[1]).unbind(2)  # [3, h', w'] each
    left_bottom, right_bottom = bottom.view(3, size[0], 2, size[1]).unbind(2)
    value = bilinear(left_top, right_top, left_bottom, right_bottom, fy, fx)  # [3, h', w']
    return value.round_().clamp_(0, 255).to(torch.uint8)


def _bilinear_taps(length: int, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The lines ``size`` outputs read from ``length`` inputs, ``F.interpolate``'s rule
    (``align_corners=False``): ``[2 * size]`` int64, every output's first line, then every
    output's second; and ``[size]`` float32, the weight of the second."""
    scale = torch.tensor(length, dtype=torch.float32) / size  # in float32, as the kernel computes it
    u = ((torch.arange(size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(min=0)
    low = u.long().clamp_(max=length - 1)
    frac = (u - low).clamp_(0, 1)
    high = (low + 1).clamp_(max=length - 1)
    return torch.cat((low, high)).to(device), frac.to(device)


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

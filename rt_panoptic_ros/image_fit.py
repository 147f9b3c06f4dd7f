"""Fitting uint8 images to the network input, and reading the results back at each image's size.

One rule for every place that runs the network on images: the
:class:`~rt_panoptic_ros.runtime.Predictor` (and so the node, the bag tool and
``rt-panoptic-infer``), INT8 calibration (a calibrated engine must see exactly the pixels it
will see at run time) and the trainer's periodic evaluation (PQ logged while training must be
the PQ ``rt-panoptic-eval`` gives on the Predictor's outputs). ROS-free and torch-only, below
``runtime/`` and ``training/`` so that both may import it (the import-linter contracts in
``pyproject.toml``).

The path of one image of ``H x W`` pixels::

    fit      -> [3, h, w]   scaled to fit inside the input size (height x width), aspect kept
    pad      -> [N, 3, H', W']   top-left, zero padding; H', W' the input size, or without one
                                 the largest image rounded up to a multiple of 128
    network  -> HeadOutputs over H' x W'
    decode   -> PanopticResult at H x W: every decision made at the image's own pixels,
                read bilinearly through the resize (never a decided map resized)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rt_panoptic_ros.config import SIZE_DIVISIBILITY, Config
from rt_panoptic_ros.model import HeadOutputs
from rt_panoptic_ros.panoptic import PanopticResult, decode
from rt_panoptic_ros.panoptic.sampling import bilinear

ImageSize = tuple[int, int]


@dataclass
class FittedBatch:
    """Images fitted and padded into one network input, and where each one is in it.

    Attributes:
        images: uint8 ``[N, 3, H', W']`` (H', W' multiples of 128; the input size if one is set).
        content_sizes: each image's ``(h, w)`` in the top-left of ``images`` (after fitting).
        original_sizes: each image's own ``(H, W)``, the size of its result.
    """

    images: Tensor
    content_sizes: list[ImageSize]
    original_sizes: list[ImageSize]


def fit_batch(images: Sequence[Tensor], target: ImageSize, device: torch.device) -> FittedBatch:
    """Fit (if ``target`` is set) and pad ``[3, H, W]`` uint8 images into one batch on ``device``.

    Args:
        images: ``[3, H, W]`` uint8 RGB, any sizes, on ``device`` (a CPU image is copied over
            after fitting, which is cheaper than before).
        target: ``(height, width)`` of the network input (multiples of 128); ``(0, 0)``: each
            image keeps its size and the batch is the largest one rounded up to 128.
    """
    originals = [(int(t.shape[-2]), int(t.shape[-1])) for t in images]
    fitted = [fit(image, target) for image in images] if all(target) else list(images)
    sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in fitted]
    padded = (
        target if all(target) else (round_up(max(h for h, _ in sizes)), round_up(max(w for _, w in sizes)))
    )
    return FittedBatch(pad_batch(fitted, padded, device), sizes, originals)


def decode_fitted(outputs: HeadOutputs, cfg: Config, batch: FittedBatch) -> list[PanopticResult]:
    """The panoptic decoder on ``batch``'s outputs: one result per image, at its own size.

    Mask probabilities and semantic logits are read bilinearly through the fit, so a fitted
    image loses nothing to it but the network's own resolution.
    """
    return decode(outputs, cfg, batch.content_sizes, batch.original_sizes)


def fit(image: Tensor, target: ImageSize) -> Tensor:
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


def pad_batch(images: Sequence[Tensor], size: ImageSize, device: torch.device) -> Tensor:
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

"""Training augmentation of the paper (Sec. 5.1, "Implementation details").

- Cityscapes: a random 1800×900 (W×H) crop, re-scaled randomly by a factor in (0.7, 1.3).
- COCO: the shortest side resized to one of (640, 720, 800), the longest capped at 1333
  (the cap is the original code's, from maskrcnn-benchmark; the paper tests at 1333).
- Both: horizontal flip with probability 0.5 (the original code's default).

A transform maps a :class:`Sample` to a new one, moving the image, the segment index map and
the boxes together. Masks and the semantic map are derived from the index map afterwards
(``coco_panoptic.py``), so they cannot drift from each other: one nearest-neighbour resize of
an ``int32`` map instead of one per mask. Randomness comes only from the ``numpy`` generator
passed in, so a seed reproduces an augmentation exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class Sample:
    """One image and its panoptic annotation while it is being augmented.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        segments: ``[H, W]`` int32, index of each pixel's segment in the annotation's
            ``segments_info``, -1 for VOID.
        boxes: ``[K, 4]`` float32 ``x1, y1, x2, y2`` per segment, in pixel-edge coordinates
            (pixel column ``x`` spans ``[x, x + 1)``), so a resize by ``s`` scales them by ``s``.
    """

    image: np.ndarray
    segments: np.ndarray
    boxes: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.image.shape[0], self.image.shape[1]


class Transform(ABC):
    """A (random) geometric transform applied identically to image, segments and boxes."""

    @abstractmethod
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...


class Compose(Transform):
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def resize(sample: Sample, height: int, width: int) -> Sample:
    """Resize to ``height`` × ``width``: image bilinear, segments nearest, boxes scaled per axis.

    Both OpenCV modes sample at pixel centres (``INTER_NEAREST_EXACT``, not ``INTER_NEAREST``,
    which is shifted by half a pixel), so the segment map stays aligned with the image.
    """
    h, w = sample.size
    if (height, width) == (h, w):
        return sample
    image = cv2.resize(sample.image, (width, height), interpolation=cv2.INTER_LINEAR)
    segments = cv2.resize(sample.segments, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    scale = np.array([width / w, height / h, width / w, height / h], dtype=np.float32)
    return Sample(image=image, segments=segments, boxes=sample.boxes * scale)


class Resize(Transform):
    """Resize every sample to ``height`` × ``width`` (image bilinear, segments nearest)."""

    def __init__(self, height: int, width: int):
        if height < 1 or width < 1:
            raise ValueError(f"Resize: size must be positive, got {height}x{width}")
        self.height, self.width = height, width

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return resize(sample, self.height, self.width)

    def __repr__(self) -> str:
        return f"Resize({self.height}, {self.width})"


class RandomScale(Transform):
    """Resize by a factor drawn uniformly from ``[min_scale, max_scale]`` (Cityscapes: 0.7–1.3)."""

    def __init__(self, min_scale: float = 0.7, max_scale: float = 1.3):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"RandomScale: need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = min_scale, max_scale

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        scale = rng.uniform(self.min_scale, self.max_scale)
        h, w = sample.size
        return resize(sample, max(1, round(h * scale)), max(1, round(w * scale)))

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomCrop(Transform):
    """Crop a ``height`` × ``width`` window at a uniformly random position.

    An image smaller than the window along an axis keeps its full extent on that axis (no
    padding: batching pads to a multiple of 128 anyway). Boxes are shifted and clipped to the
    window; a segment that leaves the window keeps an empty box and no pixels.
    """

    def __init__(self, height: int = 900, width: int = 1800):
        if height < 1 or width < 1:
            raise ValueError(f"RandomCrop: size must be positive, got {height}x{width}")
        self.height, self.width = height, width

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample.size
        ch, cw = min(h, self.height), min(w, self.width)
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        boxes = sample.boxes - np.array([x0, y0, x0, y0], dtype=np.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, cw)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, ch)
        return Sample(
            image=np.ascontiguousarray(sample.image[y0 : y0 + ch, x0 : x0 + cw]),
            segments=np.ascontiguousarray(sample.segments[y0 : y0 + ch, x0 : x0 + cw]),
            boxes=boxes,
        )

    def __repr__(self) -> str:
        return f"RandomCrop({self.height}, {self.width})"


class ResizeShortestEdge(Transform):
    """Resize so the shorter side is one of ``short_edges`` (chosen at random) and the longer
    side is at most ``max_size`` (then the longer side is ``max_size``), keeping the aspect."""

    def __init__(self, short_edges: Sequence[int] = (640, 720, 800), max_size: int = 1333):
        if not short_edges or min(short_edges) < 1 or max_size < 1:
            raise ValueError(f"ResizeShortestEdge: bad sizes {list(short_edges)}, max {max_size}")
        self.short_edges, self.max_size = tuple(short_edges), max_size

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample.size
        scale = int(rng.choice(self.short_edges)) / min(h, w)
        scale = min(scale, self.max_size / max(h, w))
        return resize(sample, max(1, round(h * scale)), max(1, round(w * scale)))

    def __repr__(self) -> str:
        return f"ResizeShortestEdge({self.short_edges}, max_size={self.max_size})"


class RandomHorizontalFlip(Transform):
    """Mirror left-right with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: prob {prob} not in [0, 1]")
        self.prob = prob

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        w = sample.size[1]
        boxes = sample.boxes.copy()
        boxes[:, 0], boxes[:, 2] = w - sample.boxes[:, 2], w - sample.boxes[:, 0]
        return replace(
            sample,
            image=np.ascontiguousarray(sample.image[:, ::-1]),
            segments=np.ascontiguousarray(sample.segments[:, ::-1]),
            boxes=boxes,
        )

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip({self.prob})"


def cityscapes_train_transforms(
    crop: tuple[int, int] = (900, 1800), scale: tuple[float, float] = (0.7, 1.3), flip: float = 0.5
) -> Compose:
    """The paper's Cityscapes augmentation: crop ``crop`` (H, W), re-scale the crop, flip."""
    return Compose([RandomCrop(*crop), RandomScale(*scale), RandomHorizontalFlip(flip)])


def coco_train_transforms(
    short_edges: Sequence[int] = (640, 720, 800), max_size: int = 1333, flip: float = 0.5
) -> Compose:
    """The paper's COCO augmentation: random shortest side, longest capped, flip, no crop."""
    return Compose([ResizeShortestEdge(short_edges, max_size), RandomHorizontalFlip(flip)])

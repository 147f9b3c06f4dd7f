"""What the decoder returns: a panoptic segmentation of one image."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class InstanceSegment:
    """One instance of a thing class in a :class:`PanopticResult` (not to be confused with an
    entry of a COCO panoptic file's ``segments_info``, ``training.data.panoptic_format.Segment``).

    Attributes:
        id: the instance's value in ``PanopticResult.instance`` (1..K, in decreasing score).
        category_id: its semantic class id (a thing class; ``Config.dataset.class_names``).
        score: detection score, box-class probability x centerness (paper Sec. 4.1).
        bbox: ``(x1, y1, x2, y2)`` tight box of its pixels in the image; x2, y2 exclusive.
        area: its number of pixels in the image.
    """

    id: int
    category_id: int
    score: float
    bbox: tuple[float, float, float, float]
    area: int


@dataclass
class PanopticResult:
    """Panoptic segmentation of one image, at the image's own size ``H x W``.

    Attributes:
        semantic: ``[H, W]`` class ids, 255 = void (uint8; int32 with 65535 = void for
            models with more than 255 classes).
        instance: ``[H, W]`` 0 = stuff or void, k = ``segments[k - 1]`` (uint8 while
            ``max_detections`` <= 255, as in every preset; int16 above).
        segments: the instances, ordered by id.
        frame_instance: only on a tracked result (``rt_panoptic_ros.tracking``), whose
            ``instance`` holds track ids (int16, int32 once an id exceeds 32767) and whose
            ``segments`` carry them as ``id`` (in the frame's order, not sorted by id): the
            frame's own ``[H, W]`` map in which pixel k is ``segments[k - 1]``. ``None``:
            ``instance`` is that map.
    """

    semantic: Tensor
    instance: Tensor
    segments: list[InstanceSegment] = field(default_factory=list)
    frame_instance: Tensor | None = None

    @property
    def segment_index(self) -> Tensor:
        """``[H, W]`` map in which pixel k is ``segments[k - 1]`` (0 = none), tracked or not:
        what drawing and per-segment statistics index by."""
        return self.instance if self.frame_instance is None else self.frame_instance

    def to(self, device: str | torch.device) -> PanopticResult:
        """The same result with its maps on ``device`` (one copy each)."""
        frame_instance = None if self.frame_instance is None else self.frame_instance.to(device)
        return PanopticResult(
            self.semantic.to(device), self.instance.to(device), list(self.segments), frame_instance
        )


def instance_boxes(instance: Tensor, count: int) -> Tensor:
    """Tight boxes of the instance ids 1..count of an ``[H, W]`` id map (0 = none), vectorised.

    Returns:
        ``[count, 4]`` float ``(x1, y1, x2, y2)``, x2 and y2 exclusive.
    """
    h, w = instance.shape
    ids = instance.reshape(-1).long()
    ys, xs = torch.meshgrid(
        torch.arange(h, device=ids.device), torch.arange(w, device=ids.device), indexing="ij"
    )
    coords = torch.stack((xs.reshape(-1), ys.reshape(-1)))  # [2, h*w]
    index = ids[None].expand(2, -1)
    lows = torch.full((2, count + 1), max(h, w), device=ids.device, dtype=torch.long)
    highs = torch.full((2, count + 1), -1, device=ids.device, dtype=torch.long)
    lows = lows.scatter_reduce(1, index, coords, reduce="amin")[:, 1:]
    highs = (highs.scatter_reduce(1, index, coords, reduce="amax")[:, 1:] + 1).clamp(min=0)
    return torch.stack((lows[0], lows[1], highs[0], highs[1]), dim=1).float()

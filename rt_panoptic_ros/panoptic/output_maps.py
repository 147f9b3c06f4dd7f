"""The decoder's output: the ``[H, W]`` maps as they are written, and each segment's tight box.

:class:`OutputMaps` is filled per block of pixels that decide alike, then per band pixel
(:class:`~rt_panoptic_ros.panoptic.pixels.Band`); :func:`segment_boxes` and :func:`box_extents`
give the kept instances' boxes from the blocks and pixels they own, without a pass over the
finished map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.panoptic.fusion import Placement
from rt_panoptic_ros.panoptic.masks import Queries
from rt_panoptic_ros.panoptic.pixels import Band
from rt_panoptic_ros.panoptic.result import InstanceSegment, PanopticResult
from rt_panoptic_ros.panoptic.sampling import AxisBlocks, fill_blocks, pick


@dataclass
class OutputMaps:
    """The ``[H, W]`` output maps, written per block, then per band pixel (:class:`Band`)."""

    semantic_dtype: torch.dtype
    instance_dtype: torch.dtype
    semantic: Tensor | None = None
    instance: Tensor | None = None

    @classmethod
    def allocate(cls, cfg: Config) -> OutputMaps:
        return cls(
            semantic_dtype=torch.uint8 if cfg.dataset.num_classes <= 255 else torch.int32,
            instance_dtype=_smallest_int(cfg.decoder.max_detections),
        )

    def fill(self, semantic: Tensor, instance: Tensor, rows: AxisBlocks, cols: AxisBlocks) -> None:
        """Per-block values ``[R * C]`` over the blocks' pixels."""
        shape = (len(rows), len(cols))
        self.semantic = fill_blocks(semantic.to(self.semantic_dtype).view(shape), rows, cols)
        self.instance = fill_blocks(instance.to(self.instance_dtype).view(shape), rows, cols)

    def result(self, placed: Placement, q: Queries, classes: Tensor, boxes: Tensor) -> PanopticResult:
        """The maps and the segments (one host transfer for all the per-instance numbers)."""
        columns = zip(
            classes[placed.kept].tolist(), q.scores[placed.kept].tolist(), boxes.tolist(),
            placed.areas.tolist(), strict=True,
        )  # fmt: skip
        segments = [
            InstanceSegment(id=k, category_id=c, score=s, bbox=tuple(b), area=a)
            for k, (c, s, b, a) in enumerate(columns, start=1)
        ]
        return PanopticResult(semantic=self.semantic, instance=self.instance, segments=segments)


def _smallest_int(largest: int) -> torch.dtype:
    """The smallest torch integer type that holds ``0..largest``: uint8 for up to 255 instances
    (the presets' 100), so an 8000x8000 instance map takes 61 MiB, not 122 (int16); int16 up
    to the config's limit of 10000."""
    return torch.uint8 if largest <= torch.iinfo(torch.uint8).max else torch.int16


def segment_boxes(
    placed: Placement,
    blocks: Tensor,
    band_ids: Tensor | None,
    axes: tuple[AxisBlocks, AxisBlocks],
    band: Band,
    extents: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Tight ``[K', 4]`` xyxy boxes (x2, y2 exclusive) of the kept instances, from the units they own.

    Args:
        blocks: ``[B']`` the owned blocks (flat indices); band_ids: ``[M * h * w]`` the segment
            id of each band slot (0 = none, ``Placement.new_id`` of its owner), or None;
            extents: those of further pixels (:func:`box_extents`), if any.
    """
    rows, cols = axes
    a, b = blocks // len(cols), blocks % len(cols)
    low = torch.stack((pick(cols.start, b), pick(rows.start, a)))  # [2, B'] x0, y0
    high = low + torch.stack((pick(cols.length, b), pick(rows.length, a)))
    ids = pick(placed.new_id, pick(placed.owner, blocks))
    extents = box_extents(ids, (low, high), len(placed.kept), extents)
    if band_ids is not None:
        extents = band_extents(band, band_ids, len(placed.kept), extents)
    lows, highs = extents
    return torch.stack((lows[0, 1:], lows[1, 1:], highs[0, 1:], highs[1, 1:]), dim=1).float()


def band_extents(
    band: Band, ids: Tensor, count: int, start: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor]:
    """:func:`box_extents` of the band's slots, ``ids [M * h * w]`` (0 = no instance).

    Every slot goes in, the unowned ones to id 0: cheaper than selecting the owned ones
    (padded slots repeat pixels of their blocks, so they add nothing)."""
    m, h, w = band.valid.shape
    # x and y of every slot in one copy; the exclusive highs are one more.
    xy = torch.stack((band.x[:, None, :].expand(m, h, w), band.y[:, :, None].expand(m, h, w))).view(2, -1)
    return box_extents(ids, (xy, xy + 1), count, start)


def box_extents(
    ids: Tensor, corners: tuple[Tensor, Tensor], count: int, start: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor]:
    """``[2, count + 1]`` lowest ``(x0, y0)`` and highest ``(x1, y1)`` per id (1..count; 0 = none,
    a bin that is ignored) of ``[n]`` boxes, ``corners = ([2, n] (x0, y0), [2, n] (x1, y1))``,
    taken together with ``start`` (if given)."""
    if start is None:
        lows = torch.full((2, count + 1), torch.iinfo(torch.long).max, dtype=torch.long, device=ids.device)
        highs = torch.zeros((2, count + 1), dtype=torch.long, device=ids.device)
    else:
        lows, highs = start
    index = ids[None].expand(2, -1)
    lows = lows.scatter_reduce(1, index, corners[0], reduce="amin")
    highs = highs.scatter_reduce(1, index, corners[1], reduce="amax")
    return lows, highs

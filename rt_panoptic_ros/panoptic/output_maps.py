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
from rt_panoptic_ros.panoptic.sampling import AxisBlocks, fill_blocks


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
            instance_dtype=torch.int16 if cfg.decoder.max_detections <= 32767 else torch.int32,
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


def segment_boxes(
    placed: Placement,
    blocks: Tensor,
    slots: Tensor,
    axes: tuple[AxisBlocks, AxisBlocks],
    band: Band,
    extents: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Tight ``[K', 4]`` xyxy boxes (x2, y2 exclusive) of the kept instances, from the units they own.

    Args:
        blocks: ``[B']`` the owned blocks (flat indices); slots: ``[P']`` the owned band slots;
        extents: those of further pixels (:func:`box_extents`), if any.
    """
    rows, cols = axes
    a, b = blocks // len(cols), blocks % len(cols)
    y, x = band.coordinates(slots)
    x0 = torch.cat((cols.start[b], x))
    y0 = torch.cat((rows.start[a], y))
    x1 = torch.cat((cols.start[b] + cols.length[b], x + 1))
    y1 = torch.cat((rows.start[a] + rows.length[a], y + 1))
    owners = torch.cat((placed.owner[blocks], placed.owner[len(rows) * len(cols) + slots]))
    ids = placed.new_id[owners] - 1
    lows, highs = box_extents(ids, (x0, y0, x1, y1), len(placed.kept), extents)
    return torch.stack((lows[0], lows[1], highs[0], highs[1]), dim=1).float()


def box_extents(
    ids: Tensor, xyxy: tuple[Tensor, Tensor, Tensor, Tensor], count: int, start: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor]:
    """``[2, count]`` lowest ``(x0, y0)`` and highest ``(x1, y1)`` per id of ``[n]`` boxes ``xyxy``,
    taken together with ``start`` (if given)."""
    x0, y0, x1, y1 = xyxy
    if start is None:
        lows = torch.full((2, count), torch.iinfo(torch.long).max, dtype=torch.long, device=ids.device)
        highs = torch.zeros((2, count), dtype=torch.long, device=ids.device)
    else:
        lows, highs = start
    lows = lows.scatter_reduce(1, ids[None].expand(2, -1), torch.stack((x0, y0)), reduce="amin")
    highs = highs.scatter_reduce(1, ids[None].expand(2, -1), torch.stack((x1, y1)), reduce="amax")
    return lows, highs

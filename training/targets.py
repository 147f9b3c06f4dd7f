"""Training targets of the dense detections, levelness and semantics (paper Sec. 4.1, Eq. 8-10).

A location ``(x, y)`` of an FPN level with stride ``z`` sits at pixel
``(x_o, y_o) = (floor(z/2) + x z, floor(z/2) + y z)``
(:func:`~rt_panoptic_ros.panoptic.boxes.locations`). It is *foreground* when that pixel lies in
a ground-truth instance mask; instance masks do not overlap, so it belongs to exactly one
instance (weakly supervised mode, Sec. 5.6: inside a ground-truth box, the smallest box
winning where boxes overlap). A foreground location regresses

    l = x_o - x1,  t = y_o - y1,  r = x2 - x_o,  b = y2 - y_o                      (Eq. 8)

and is kept on level i only if ``m_{i-1} < max(l, t, r, b) <= m_i`` (Eq. 9; the lower bound
is strict so that every location has exactly one level, which the levelness needs), with
centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` (Eq. 10) and the box class
of its instance. The levelness target at stride 4 is 0 on background and ``i + 1`` where the
location's instance regresses on level i by the same rule, i.e. the level whose box the
decoder must read there (Eq. 14).

Everything is computed for the whole batch at once on the device of the inputs: no loop over
images, instances or pixels (only over the five levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rt_panoptic_ros.config import FPN_STRIDES
from rt_panoptic_ros.panoptic.boxes import BOX_MAP_STRIDE, locations

#: Semantic label of pixels no loss looks at (VOID, padding), as the datasets write it.
IGNORE_LABEL = 255
#: FCOS's object-size bounds m_1..m_4 (pixels) between P3..P7; m_0 = 0 and m_5 = inf.
DEFAULT_LEVEL_BOUNDS: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)


@dataclass
class Instances:
    """The ground-truth instances of a batch, concatenated over its images.

    Attributes:
        image: ``[K]`` int64 index of the image each instance belongs to.
        boxes: ``[K, 4]`` float ``x1, y1, x2, y2`` in pixel-edge coordinates.
        masks: ``[K, H, W]`` bool on the padded batch grid (all False outside the image).
        thing_classes: ``[K]`` int64 box-class channel (index into ``DatasetMeta.thing_ids``).
        iscrowd: ``[K]`` bool; crowd regions are neither foreground nor background.
    """

    image: Tensor
    boxes: Tensor
    masks: Tensor
    thing_classes: Tensor
    iscrowd: Tensor

    def to(self, device: torch.device) -> Instances:
        return Instances(*(t.to(device, non_blocking=True) for t in self.__dict__.values()))


@dataclass
class LevelTargets:
    """Targets of all FPN levels, flattened level by level in the order of the head's outputs.

    ``P = sum_i h_i * w_i`` locations per image, levels concatenated (stride 8 first), each
    level row-major.

    Attributes:
        labels: ``[N, P]`` int64 box-class channel of foreground locations, -1 on background,
            -2 where the location is ignored (inside a crowd region).
        ltrb: ``[N, P, 4]`` float l, t, r, b (Eq. 8), valid where ``labels >= 0``.
        centerness: ``[N, P]`` float (Eq. 10), valid where ``labels >= 0``.
        points: ``[P, 2]`` float ``(x_o, y_o)`` of every location.
        instance: ``[N, P]`` int64 index into the batch's instances, -1 on background.
    """

    labels: Tensor
    ltrb: Tensor
    centerness: Tensor
    points: Tensor
    instance: Tensor

    @property
    def foreground(self) -> Tensor:
        """``[N, P]`` bool."""
        return self.labels >= 0


@dataclass
class Targets:
    """Everything the losses compare the head outputs with.

    Attributes:
        levels: per-location box targets (:class:`LevelTargets`).
        levelness: ``[N, H/4, W/4]`` int64, 0 = background, ``i + 1`` = level i,
            :data:`IGNORE_LABEL` on padding and crowd regions.
        semantic: ``[N, H/s, W/s]`` int64 class ids, :data:`IGNORE_LABEL` on VOID and padding,
            ``s`` = the configured semantic stride (1 or 8).
        mask_instance: ``[N, H/4, W/4]`` int64 index of the instance whose mask covers each
            stride-4 cell, -1 elsewhere (the M_j^t of the mask loss, Eq. 17-18).
        instances: the batch's instances.
    """

    levels: LevelTargets
    levelness: Tensor
    semantic: Tensor
    mask_instance: Tensor
    instances: Instances


def assign_instances(
    points: Tensor, instances: Instances, num_images: int, weak: bool
) -> tuple[Tensor, Tensor]:
    """Which instance each location of each image belongs to (Sec. 4.1 / Sec. 5.6).

    Args:
        points: ``[P, 2]`` integer-valued ``(x_o, y_o)`` pixel positions.
        instances: ``K`` instances of the batch.
        num_images: N.
        weak: False: inside the instance's mask; True: inside its box, smallest box wins.

    Returns:
        ``instance [N, P]`` int64 (-1 = none) and ``crowd [N, P]`` bool (the instance is a
        crowd region).
    """
    n, p, k = num_images, points.shape[0], instances.boxes.shape[0]
    device = points.device
    if k == 0:
        return torch.full((n, p), -1, dtype=torch.long, device=device), torch.zeros(
            (n, p), dtype=torch.bool, device=device
        )
    x, y = points[:, 0], points[:, 1]
    if weak:
        boxes = instances.boxes  # [K, 4]
        inside = (
            (x[None] >= boxes[:, None, 0])
            & (x[None] < boxes[:, None, 2])
            & (y[None] >= boxes[:, None, 1])
            & (y[None] < boxes[:, None, 3])
        )  # [K, P]  fmt: skip
    else:
        h, w = instances.masks.shape[-2:]
        xi, yi = x.long().clamp(max=w - 1), y.long().clamp(max=h - 1)
        on_grid = (x < w) & (y < h)
        inside = instances.masks[:, yi, xi] & on_grid[None]  # [K, P]
    own_image = instances.image[:, None] == torch.arange(n, device=device)[None]  # [K, N]
    inside = inside[None] & own_image.T[:, :, None]  # [N, K, P]
    # Smallest box wins (masks do not overlap, so in mask mode at most one is inside).
    area = (instances.boxes[:, 2] - instances.boxes[:, 0]) * (instances.boxes[:, 3] - instances.boxes[:, 1])
    cost = torch.where(inside, area[None, :, None], torch.full_like(area[None, :, None], math.inf))
    best_cost, best = cost.min(dim=1)  # [N, P]
    instance = torch.where(torch.isfinite(best_cost), best, torch.full_like(best, -1))
    crowd = (instance >= 0) & instances.iscrowd[instance.clamp(min=0)]
    return instance, crowd


def regression_targets(points: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 8 and Eq. 10.

    Args:
        points: ``[..., 2]`` ``(x_o, y_o)``; boxes: ``[..., 4]`` xyxy, broadcast together.

    Returns:
        ``ltrb [..., 4]`` and ``centerness [...]`` in [0, 1].
    """
    ltrb = torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), dim=-1)
    lr, tb = ltrb[..., 0::2], ltrb[..., 1::2]
    ratio = (lr.min(-1).values / lr.max(-1).values.clamp(min=1e-6)) * (
        tb.min(-1).values / tb.max(-1).values.clamp(min=1e-6)
    )
    return ltrb, ratio.clamp(min=0).sqrt()


def level_of(ltrb: Tensor, bounds: tuple[float, ...]) -> Tensor:
    """Eq. 9: the level i with ``m_{i-1} < max(l, t, r, b) <= m_i``.

    Args:
        ltrb: ``[..., 4]``; bounds: m_1..m_{L-1} (m_0 = 0, m_L = inf).

    Returns:
        ``[...]`` int64 level index 0..L-1.
    """
    edges = torch.tensor(bounds, dtype=ltrb.dtype, device=ltrb.device)
    return torch.bucketize(ltrb.amax(dim=-1), edges, right=False)  # right=False: m_i falls in level i


def build_targets(
    instances: Instances,
    semantic: Tensor,
    image_sizes: Tensor,
    level_sizes: list[tuple[int, int]],
    level_bounds: tuple[float, ...] = DEFAULT_LEVEL_BOUNDS,
    weak: bool = False,
    semantic_stride: int = 1,
) -> Targets:
    """All training targets of a batch.

    Args:
        instances: the batch's thing instances (crowd regions included, flagged).
        semantic: ``[N, H, W]`` int64 class ids, :data:`IGNORE_LABEL` on VOID and padding.
        image_sizes: ``[N, 2]`` int64 ``(H, W)`` of each image's content (top-left).
        level_sizes: ``(h_i, w_i)`` of the L head levels, strides :data:`FPN_STRIDES`.
        level_bounds: m_1..m_{L-1} of Eq. 9.
        weak: the weakly supervised mode (boxes, no masks).
        semantic_stride: 1 (full resolution) or 8 (the semantic logits' own grid).

    Returns:
        :class:`Targets` on ``semantic``'s device.
    """
    n, height, width = semantic.shape
    device = semantic.device
    if len(level_bounds) != len(level_sizes) - 1:
        raise ValueError(f"level_bounds: {len(level_bounds)} values for {len(level_sizes)} levels")
    # Per-level box targets: one assignment over all levels' locations at once.
    points = torch.cat(
        [locations(h, w, s, device) for (h, w), s in zip(level_sizes, FPN_STRIDES, strict=False)]
    )  # [P, 2]
    level_index = torch.cat(
        [torch.full((h * w,), i, device=device) for i, (h, w) in enumerate(level_sizes)]
    )  # [P]
    instance, crowd = assign_instances(points, instances, n, weak)  # [N, P]
    boxes = instances.boxes[instance.clamp(min=0)] if len(instances.boxes) else points.new_zeros(n, 1, 4)
    ltrb, centerness = regression_targets(points[None], boxes)  # [N, P, 4], [N, P]
    on_level = level_of(ltrb, level_bounds) == level_index[None]  # Eq. 9
    foreground = (instance >= 0) & ~crowd & on_level
    labels = torch.full_like(instance, -1)
    if len(instances.boxes):
        labels = torch.where(foreground, instances.thing_classes[instance.clamp(min=0)], labels)
    # Crowd regions and padding: no verdict either way.
    labels = labels.masked_fill(crowd | ~_inside(points, image_sizes), -2)
    levels = LevelTargets(
        labels=labels, ltrb=ltrb, centerness=centerness, points=points,
        instance=torch.where(foreground, instance, torch.full_like(instance, -1)),
    )  # fmt: skip

    # Levelness and mask membership on the stride-4 grid.
    h4, w4 = math.ceil(height / BOX_MAP_STRIDE), math.ceil(width / BOX_MAP_STRIDE)
    cells = locations(h4, w4, BOX_MAP_STRIDE, device)  # [P4, 2]
    cell_instance, cell_crowd = assign_instances(cells, instances, n, weak)  # [N, P4]
    levelness = torch.zeros_like(cell_instance)
    if len(instances.boxes):
        cell_ltrb, _ = regression_targets(cells[None], instances.boxes[cell_instance.clamp(min=0)])
        levelness = torch.where(cell_instance >= 0, level_of(cell_ltrb, level_bounds) + 1, levelness)
    ignore = cell_crowd | ~_inside(cells, image_sizes)
    levelness = levelness.masked_fill(ignore, IGNORE_LABEL).view(n, h4, w4)
    mask_instance = torch.where(cell_crowd, torch.full_like(cell_instance, -1), cell_instance).view(n, h4, w4)

    if semantic_stride == 1:
        semantic_targets = semantic
    else:  # the label at each location's pixel, as the box targets sample masks
        grid = locations(math.ceil(height / semantic_stride), math.ceil(width / semantic_stride),
                         semantic_stride, device).long()  # fmt: skip
        on_grid = (grid[:, 0] < width) & (grid[:, 1] < height)
        sampled = semantic[:, grid[:, 1].clamp(max=height - 1), grid[:, 0].clamp(max=width - 1)]
        sampled = sampled.masked_fill(~on_grid[None], IGNORE_LABEL)
        semantic_targets = sampled.view(n, math.ceil(height / semantic_stride), -1)
    return Targets(
        levels=levels, levelness=levelness, semantic=semantic_targets,
        mask_instance=mask_instance, instances=instances,
    )  # fmt: skip


def _inside(points: Tensor, image_sizes: Tensor) -> Tensor:
    """``[N, P]`` bool: location p lies in image n's content (not its padding)."""
    return (points[None, :, 0] < image_sizes[:, None, 1]) & (points[None, :, 1] < image_sizes[:, None, 0])

"""Dense boxes: feature-map locations, l/t/r/b decoding, the levelness box map and box IoU.

Coordinates are input pixels, boxes are ``(x1, y1, x2, y2)`` float tensors. A location
``(x, y)`` of a map with stride ``z`` sits at pixel ``(floor(z/2) + x*z, floor(z/2) + y*z)``
(paper Sec. 4.1), and a box predicted there is that point minus ``(l, t)`` and plus
``(r, b)`` (Eq. 8).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from rt_panoptic_ros.config import IouVariant
from rt_panoptic_ros.panoptic.sampling import pick

#: Stride of the levelness map and of the dense box map B(x, y) (paper Sec. 4.2).
BOX_MAP_STRIDE = 4


def locations(height: int, width: int, stride: int, device: torch.device) -> Tensor:
    """Pixel centres of a ``height x width`` map of stride ``stride``.

    Returns:
        float ``[height * width, 2]`` ``(x, y)`` pairs in row-major order.
    """
    shifts_x = torch.arange(width, device=device, dtype=torch.float32) * stride + stride // 2
    shifts_y = torch.arange(height, device=device, dtype=torch.float32) * stride + stride // 2
    y, x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=1)


def ltrb_to_boxes(points: Tensor, ltrb: Tensor) -> Tensor:
    """Eq. 8 inverted: ``[..., 2]`` points and ``[..., 4]`` distances -> ``[..., 4]`` xyxy boxes."""
    return torch.cat((points - ltrb[..., :2], points + ltrb[..., 2:]), dim=-1)


def clip_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Clip ``[..., 4]`` xyxy boxes to their images ``[0, W] x [0, H]``.

    Args:
        sizes: ``[..., 2]`` ``(H, W)`` per box (broadcast against ``boxes[..., 0]``).
    """
    limits = sizes.to(boxes.dtype)[..., [1, 0, 1, 0]]  # W, H, W, H
    return torch.minimum(boxes.clamp(min=0), limits)


def box_levels(levelness_logits: Tensor, background: str = "exclude") -> Tensor:
    """Per pixel of the stride-4 levelness map, the FPN level whose box it takes (Eq. 14).

    Args:
        levelness_logits: ``[N, L+1, h, w]``; channel 0 = background, i+1 = level i.
        background: ``"exclude"``: a pixel whose argmax is the background takes no box (so
            it belongs to no mask); ``"tri"``: the original code's rule, the argmax over the
            levels alone, so every pixel takes its best level's box.

    Returns:
        ``[N, h, w]`` int64: 0 = no box, i+1 = level i.
    """
    if background == "tri":
        return levelness_logits[:, 1:].max(dim=1).indices + 1
    return levelness_logits.max(dim=1).indices  # same as argmax, several times faster on CPUs


def dense_boxes_at(
    box_reg: list[Tensor], ys: Tensor, xs: Tensor, levels: Tensor, map_size: tuple[int, int]
) -> Tensor:
    """The dense box map B(x, y) (Eq. 14) at some cells of the stride-4 map of one image.

    Each level's l, t, r, b map is read bilinearly at the cell's position (exactly what
    upsampling the whole map with ``F.interpolate(mode="bilinear")`` would give there) and
    the cell takes the box of its level. Only the cells that can belong to a mask are asked
    for, which spares upsampling five whole maps.

    Args:
        box_reg: L x ``[4, h_i, w_i]`` l, t, r, b distances in input pixels, of one image.
        ys, xs: ``[P]`` int64 row and column of each cell in the ``map_size`` grid.
        levels: ``[P]`` int64 level + 1 of each cell (>= 1; background cells take no box).
        map_size: ``(h, w)`` of the stride-4 map.

    Returns:
        ``[P, 4]`` xyxy boxes in input pixels.
    """
    dtype, device = box_reg[0].dtype, ys.device
    normalised, centres, sign = _map_lines(tuple(map_size), dtype, device)
    # Each cell read at its own level only: the cells grouped by level, one sampling per level.
    order = torch.argsort(levels, stable=True)
    counts = torch.bincount(levels - 1, minlength=len(box_reg)).tolist()
    grid = torch.stack((pick(normalised[1], pick(xs, order)), pick(normalised[0], pick(ys, order))), dim=1)
    parts = [
        F.grid_sample(
            r[None], part.view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False
        )
        for r, part in zip(box_reg, grid.split(counts), strict=True)
        if len(part)
    ]  # [1, 4, 1, P_i] each
    ltrb = torch.empty((4, len(ys)), dtype=dtype, device=device)
    if parts:
        ltrb.index_copy_(1, order, torch.cat(parts, dim=3)[0, :, 0])  # [4, P]
    x, y = pick(centres[1], xs), pick(centres[0], ys)
    return torch.stack((x, y, x, y), dim=1) + ltrb.T * sign


@functools.lru_cache(maxsize=16)  # per map size: a camera's frames share it
def _map_lines(
    map_size: tuple[int, int], dtype: torch.dtype, device: torch.device
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Per row and column of the map (read per cell by :func:`dense_boxes_at`): the normalised
    sampling points of the cell centres (grid_sample, align_corners=False), the centres in
    pixels, and the signs of Eq. 8 inverted (x - l as x + (-1) * l, the same number: one
    operation for all four). Cached: read-only."""
    lines = [torch.arange(n, device=device) for n in map_size]
    normalised = [((2 * v + 1) / n - 1).to(dtype) for v, n in zip(lines, map_size, strict=True)]
    centres = [v.to(dtype) * BOX_MAP_STRIDE + BOX_MAP_STRIDE // 2 for v in lines]
    return normalised, centres, torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=dtype, device=device)


def box_area(boxes: Tensor) -> Tensor:
    """``[..., 4]`` xyxy -> ``[...]`` areas (0 for inverted boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_overlap(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of xyxy boxes ``a [..., 4]`` and ``b [..., 4]`` (broadcast)."""
    inter_w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_(min=0)
    inter_h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_(min=0)
    inter = inter_w.mul_(inter_h)
    union = (box_area(a) + box_area(b)).sub_(inter)
    return inter, union


def box_iou(a: Tensor, b: Tensor, variant: IouVariant = "iou") -> Tensor:
    """P_loc = IoU(B(x, y), B_j) of xyxy boxes ``a [..., 4]`` and ``b [..., 4]`` (broadcast, Eq. 6).

    Args:
        variant: ``"iou"``, the paper's I / U; or ``"tri"``, the original implementation's
            ``(I + 1) / (U + 1) - (G - U) / G`` with G the area of the enclosing box
            (a smoothed generalised IoU), which the converted TRI model was tuned with.

    Returns:
        ``"iou"``: in [0, 1]; ``"tri"``: in (-1, 1].
    """
    inter, union = box_overlap(a, b)
    if variant == "iou":
        return inter / union.clamp(min=torch.finfo(union.dtype).eps)
    enclosing = (torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])) * (
        torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    ) + 1e-7
    return (inter + 1.0) / (union + 1.0) - (enclosing - union) / enclosing


def pixel_query_iou(pixel_boxes: Tensor, queries: Tensor, variant: IouVariant = "iou") -> Tensor:
    """:func:`box_iou` of every pixel's box ``[P, 4]`` with every query box ``[K, 4]`` -> ``[P, K]``."""
    return box_iou(pixel_boxes[:, None, :], queries[None, :, :], variant)

"""Queries from dense detections and their masks (paper Sec. 3, Eq. 4-7).

Queries B_j are the dense boxes that survive a score threshold, a per-level top-k and
class-aware NMS (Eq. 4). Each query's mask is read off the dense box map: a pixel belongs to
query j when its own box overlaps B_j (P_loc, Eq. 6) and its semantic probability of the
query's class is high (P_sem), i.e. M_j = P_loc * P_sem > sigma (Eq. 5, 7).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from rt_panoptic_ros.config import FPN_STRIDES, DecoderConfig, IouVariant
from rt_panoptic_ros.panoptic.boxes import box_iou, box_overlap, clip_boxes, locations, ltrb_to_boxes
from rt_panoptic_ros.panoptic.sampling import pick


@dataclass
class Queries:
    """Detections of a batch after NMS, sorted by image, then by decreasing score.

    Attributes:
        image: ``[Q]`` int64 index of the image each query belongs to.
        boxes: ``[Q, 4]`` float xyxy boxes in input pixels, clipped to the image.
        labels: ``[Q]`` int64 box-class channel (0..C_th-1).
        scores: ``[Q]`` float class probability x centerness (Sec. 4.1).
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    scores: Tensor

    def of_image(self, i: int) -> Queries:
        keep = self.image == i
        return Queries(self.image[keep], self.boxes[keep], self.labels[keep], self.scores[keep])


def level_candidates(
    box_cls: list[Tensor], box_reg: list[Tensor], centerness: list[Tensor], cfg: DecoderConfig
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Candidates of every FPN level: class probability above ``pre_nms_thresh``, top-k by
    score per level and image.

    The levels are concatenated so that most steps run once, not once per level (a decode's
    fixed cost is mostly its number of operations). Sigmoids are taken per level all the same:
    their vectorised and scalar paths can differ in the last bit, so where an element falls
    must not change.

    Args:
        box_cls, box_reg, centerness: L levels (strides 8..128) of ``[N, C_th, h_i, w_i]``
            logits, ``[N, 4, h_i, w_i]`` and ``[N, 1, h_i, w_i]``.

    Returns:
        ``image [M]``, ``boxes [M, 4]`` (unclipped xyxy), ``labels [M]``, ``scores [M]``:
        level by level, image by image, by decreasing score; at most ``pre_nms_top_n`` per
        level and image.
    """
    n, classes = box_cls[0].shape[:2]
    device = box_cls[0].device
    probability = torch.cat([c.sigmoid().flatten(2) for c in box_cls], dim=2)  # [N, C_th, S] all levels
    probability = probability.transpose(1, 2)  # [N, S, C_th]
    scores = probability * torch.cat([o.sigmoid().flatten(1) for o in centerness], dim=1)[:, :, None]
    # Non-candidates get -1 so that top-k prefers every candidate over them.
    scores = scores.masked_fill(probability <= cfg.pre_nms_thresh, -1.0).flatten(1)  # [N, S * C_th]
    tops, indices, start = [], [], 0
    for c in box_cls:
        size = c.shape[2] * c.shape[3] * classes
        top, index = scores[:, start : start + size].topk(min(cfg.pre_nms_top_n, size), dim=1)  # [N, k]
        tops.append(top.flatten())
        indices.append(index.flatten() + start)
        start += size
    top, index = torch.cat(tops), torch.cat(indices)  # level by level, image by image
    valid = (top > 0).nonzero().squeeze(1)
    image = pick(_candidate_images(n, tuple(len(t) // n for t in tops), device), valid)
    index = pick(index, valid)
    location, labels = index // classes, index % classes  # location among all levels' S
    reg = torch.cat([r.flatten(2) for r in box_reg], dim=2).transpose(1, 2).reshape(-1, 4)  # [N * S, 4]
    ltrb = pick(reg, image * probability.shape[1] + location)  # [M, 4]
    points = pick(_level_points(tuple(c.shape[2:] for c in box_cls), device), location)  # [M, 2]
    return image, ltrb_to_boxes(points.to(ltrb.dtype), ltrb), labels, pick(top, valid)


@functools.lru_cache(maxsize=8)  # per batch and input size: a camera's frames share it
def _candidate_images(n: int, per_level: tuple[int, ...], device: torch.device) -> Tensor:
    """The image of each of :func:`level_candidates`' top-k entries (``per_level[l]`` per image
    of level l), level by level, image by image. Cached: read-only."""
    counts = torch.tensor([k for k in per_level for _ in range(n)], device=device)
    return torch.arange(n, device=device).repeat(len(per_level)).repeat_interleave(counts)


@functools.lru_cache(maxsize=8)  # per input size: a camera's frames share it
def _level_points(shapes: tuple[tuple[int, int], ...], device: torch.device) -> Tensor:
    """``[S, 2]`` :func:`locations` of every level's map, level after level. Cached: read-only."""
    return torch.cat(
        [locations(h, w, stride, device) for (h, w), stride in zip(shapes, FPN_STRIDES, strict=True)]
    )


def select_queries(
    box_cls: list[Tensor],
    box_reg: list[Tensor],
    centerness: list[Tensor],
    image_sizes: list[tuple[int, int]],
    cfg: DecoderConfig,
) -> Queries:
    """Queries of a batch (Eq. 4): per-level candidates, clipped, class-aware NMS, top detections.

    Args:
        box_cls, box_reg, centerness: L levels (strides 8..128) of ``[N, ., h_i, w_i]``.
        image_sizes: ``(H, W)`` of each image's content (top-left of the padded input).
    """
    image, boxes, labels, scores = level_candidates(box_cls, box_reg, centerness, cfg)
    boxes = clip_boxes(boxes, torch.tensor(image_sizes, device=boxes.device)[image])
    num_classes = box_cls[0].shape[1]
    # One NMS call for the batch: groups are (image, class) pairs.
    keep = batched_nms(boxes, scores, image * num_classes + labels, cfg.nms_thresh)  # by score
    # Stable sort by image keeps each image's queries in decreasing score; then cap per image.
    keep = keep[torch.sort(image[keep], stable=True).indices]
    kept_image = image[keep]
    first = torch.searchsorted(kept_image, kept_image, side="left")  # index of the image's first
    rank = torch.arange(len(keep), device=keep.device) - first
    keep = keep[rank < cfg.max_detections]
    return Queries(image[keep], boxes[keep], labels[keep], scores[keep])


#: Candidate (cell, query) pairs evaluated per step: a huge box meeting every query could
#: otherwise make ``cells x queries`` pairs at once (tens of bytes each).
PAIRS_PER_STEP = 1 << 21


def instance_masks(
    pixel_boxes: Tensor,
    tiles: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    thing_probability: Tensor,
    iou_variant: IouVariant,
    mask_thresh: float,
) -> tuple[Tensor, Tensor]:
    """M_j(x, y) = P_loc(x, y, j) * P_sem(x, y, c_j) > sigma for one image (Eq. 5-7).

    P_loc > 0 needs the boxes to meet, so each tile of nearby pixels is tested against the
    queries once (its pixels' boxes' extent against B_j), and only the (pixel, query) pairs
    of tiles that meet a query are evaluated: a pixel of a street scene meets one or two of
    up to a hundred queries, so this is a few times its pixels instead of ``P x K``.

    Args:
        pixel_boxes: ``[P, 4]`` dense box map B(x, y) at the pixels considered.
        tiles: ``[P]`` int64 tile of each pixel, non-decreasing (pixels grouped by tile).
        queries: ``[K, 4]`` xyxy query boxes B_j.
        query_labels: ``[K]`` int64 box-class channel of each query (its thing class c_j).
        thing_probability: ``[P, C_th]`` semantic probability of each thing class (P_sem).
        iou_variant: ``"iou"`` or ``"tri"`` (:func:`~rt_panoptic_ros.panoptic.boxes.pixel_query_iou`).
        mask_thresh: sigma.

    Returns:
        The masks as pairs: ``cells [E]`` and ``queries [E]`` int64, M_j(cell) true for each
        pair, grouped by tile, then by query.
    """
    device = queries.device
    _, tile, counts = torch.unique_consecutive(tiles, return_inverse=True, return_counts=True)  # [T]
    first = torch.cumsum(counts, 0) - counts  # [T] first pixel of each tile
    by_tile = tile[:, None].expand(-1, 2)
    low = torch.full((len(counts), 2), torch.inf, device=device).scatter_reduce(
        0, by_tile, pixel_boxes[:, :2], reduce="amin"
    )  # fmt: skip
    high = torch.full((len(counts), 2), -torch.inf, device=device).scatter_reduce(
        0, by_tile, pixel_boxes[:, 2:], reduce="amax"
    )  # fmt: skip
    near = (queries[None, :, :2] < high[:, None]) & (queries[None, :, 2:] > low[:, None])
    pair_tiles, pair_queries = near.all(dim=2).nonzero().unbind(1)  # [T, K] -> by tile, then query
    sizes = pick(counts, pair_tiles)  # [T'] pixels of each (tile, query) pair
    cells, index = [], []
    for part in _parts(sizes, PAIRS_PER_STEP):
        segment, cell = segment_positions(pick(first, pair_tiles[part]), sizes[part])
        query = pick(pair_queries[part], segment)
        channel = cell * thing_probability.shape[1] + pick(query_labels, query)  # [cell, c_j] flat
        p_sem = pick(thing_probability.view(-1), channel)
        hit = _pair_masks(pick(pixel_boxes, cell), pick(queries, query), p_sem, iou_variant, mask_thresh)
        hit = hit.nonzero().squeeze(1)
        cells.append(pick(cell, hit))
        index.append(pick(query, hit))
    if not cells:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(cells), torch.cat(index)


def _parts(sizes: Tensor, limit: int) -> list[slice]:
    """Consecutive slices of ``sizes`` summing to at most ``limit`` each (one element at least)."""
    total = int(sizes.sum())
    if total <= limit:
        return [slice(0, len(sizes))]
    ends = torch.cumsum(sizes, 0)
    parts, start, done = [], 0, 0
    while start < len(sizes):
        stop = max(start + 1, int(torch.searchsorted(ends, done + limit, side="right")))
        parts.append(slice(start, stop))
        done, start = int(ends[stop - 1]), stop
    return parts


def segment_positions(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Enumerate the ranges ``starts[s] .. starts[s] + counts[s] - 1`` one after the other.

    Returns:
        ``segment [T]`` (which range each element comes from) and ``position [T]``.
    """
    segment = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    first = torch.cumsum(counts, 0) - counts  # [S] position of each range's first element
    offset = torch.arange(len(segment), device=counts.device) - pick(first, segment)
    return segment, pick(starts, segment) + offset


def _pair_masks(
    pixel_boxes: Tensor, queries: Tensor, p_sem: Tensor, iou_variant: IouVariant, mask_thresh: float
) -> Tensor:
    """``[E]`` bool M_j of (pixel, query) pairs: boxes ``[E, 4]`` each, ``p_sem [E]``."""
    if iou_variant == "iou":
        # I / U * P_sem > sigma, without the division.
        inter, union = box_overlap(pixel_boxes, queries)
        return inter.mul_(p_sem) > union.mul_(mask_thresh)
    return box_iou(pixel_boxes, queries, iou_variant) * p_sem > mask_thresh

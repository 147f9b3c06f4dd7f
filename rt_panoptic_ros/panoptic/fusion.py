"""Fusion of instance masks and semantic segmentation into one panoptic map (Kirillov et al.).

The rules, as detectron2's ``combine_semantic_and_instance_outputs`` states them:

1. instances are placed by decreasing score; an instance whose mask is already covered by
   more than ``overlap_threshold`` of its area (by instances placed before it) is dropped,
   otherwise it takes the pixels of its mask that are still free;
2. pixels no instance took get the semantic argmax if it is a stuff class;
3. a stuff class covering fewer than ``stuff_area`` pixels becomes void, and thing-class
   pixels that no instance took become void (255).

Rule 1 is sequential by nature. It is computed here without a loop over instances: given
which instances are kept, every overlap follows from one "first kept owner" per pixel; the
keep decisions are then iterated to their fixed point, which is the sequential answer (after
t rounds the first t decisions are final; real images settle in two or three rounds).

Masks arrive as a sparse list of (cell, instance) pairs: a cell lies in one to a few masks
out of up to a hundred, so every step costs O(pairs) instead of O(cells x instances).

All of it runs at the stride-4 resolution of the dense box map with per-pixel *weights*:
the number of output pixels each cell becomes after nearest upsampling to the image, so that
areas and the thresholds on them are exactly those of the full-resolution output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Semantic id of void pixels (unlabelled, dropped stuff, orphan thing pixels).
VOID = 255
#: Void id of models with more than 255 classes, whose semantic maps are 16-bit.
VOID_16BIT = 65535


def void_label(num_classes: int) -> int:
    """The semantic id of void: 255, or 65535 for models with more than 255 classes."""
    return VOID if num_classes <= VOID else VOID_16BIT


@dataclass
class FusedCells:
    """A fused panoptic map at stride 4, before upsampling.

    Attributes:
        semantic: ``[P]`` int64 class per cell, :func:`void_label` = void.
        instance: ``[P]`` int64, 0 = no instance, k = k-th kept instance (1-based).
        kept: ``[K']`` int64 indices (into the input masks) of the kept instances, in id order.
        areas: ``[K']`` float output pixels of each kept instance.
    """

    semantic: Tensor
    instance: Tensor
    kept: Tensor
    areas: Tensor


def fuse(
    pair_cells: Tensor,
    pair_instances: Tensor,
    mask_classes: Tensor,
    semantic_argmax: Tensor,
    is_thing: Tensor,
    weights: Tensor,
    overlap_threshold: float,
    stuff_area: float,
) -> FusedCells:
    """Fuse instance masks (sorted by decreasing score) with the semantic argmax.

    Args:
        pair_cells, pair_instances: ``[E]`` int64: cell ``pair_cells[e]`` (an index into the
            P cells) lies in mask ``pair_instances[e]`` (an index into the K instances,
            0 = highest score). Each pair at most once.
        mask_classes: ``[K]`` int64 semantic class of each instance.
        semantic_argmax: ``[P]`` int64 semantic class per cell.
        is_thing: ``[C]`` bool, True for thing classes.
        weights: ``[P]`` float output pixels each cell stands for.
        overlap_threshold: drop an instance covered by more than this fraction of its area.
        stuff_area: stuff classes with fewer output pixels than this become void.
    """
    num = len(mask_classes)
    device = semantic_argmax.device
    keep = resolve_overlaps(pair_cells, pair_instances, num, weights, overlap_threshold)  # [K]
    owner = first_kept(pair_cells, pair_instances, keep, len(semantic_argmax))  # [P], K = none
    owned = owner < num
    owner = owner.clamp(max=max(num - 1, 0))
    new_id = torch.cumsum(keep.long(), 0) * keep  # [K] ids 1..K' in score order, 0 if dropped
    if num:
        instance = torch.where(owned, new_id[owner], 0)
        semantic_of_instances = mask_classes[owner]
    else:
        instance = torch.zeros_like(semantic_argmax)
        semantic_of_instances = semantic_argmax
    kept = torch.arange(num, device=device)[keep]
    areas = torch.zeros(len(kept) + 1, device=device, dtype=weights.dtype).index_add(0, instance, weights)[1:]

    void = void_label(is_thing.numel())
    stuff = torch.where(is_thing[semantic_argmax] | owned, void, semantic_argmax)
    stuff_pixels = torch.zeros(void + 1, device=device, dtype=weights.dtype).index_add(0, stuff, weights)
    stuff = torch.where(stuff_pixels[stuff] < stuff_area, void, stuff)
    semantic = torch.where(owned, semantic_of_instances, stuff)
    return FusedCells(semantic=semantic, instance=instance, kept=kept, areas=areas)


def first_kept(pair_cells: Tensor, pair_instances: Tensor, keep: Tensor, num_cells: int) -> Tensor:
    """Per cell, the first (highest-score) kept instance whose mask covers it.

    Returns:
        ``[num_cells]`` int64 instance index, ``K`` where no kept mask covers the cell.
    """
    kept_pair = keep[pair_instances]
    first = torch.full((num_cells,), len(keep), dtype=torch.long, device=keep.device)
    return first.scatter_reduce(0, pair_cells[kept_pair], pair_instances[kept_pair], reduce="amin")


def resolve_overlaps(
    pair_cells: Tensor, pair_instances: Tensor, num: int, weights: Tensor, overlap_threshold: float
) -> Tensor:
    """Which instances the sequential overlap rule keeps, computed without a loop over them.

    Instance j is kept when it is not empty and the kept instances before it cover at most
    ``overlap_threshold`` of its area. Given a guess of the kept set, a pair (cell, j) is
    covered when the cell's first kept instance comes before j; iterating guess -> decisions
    reaches the sequential answer (round t fixes decision t at the latest; real images
    settle in two or three rounds).

    Args:
        pair_cells, pair_instances: ``[E]`` the masks as (cell, instance) pairs.
        num: K, instances, highest score first.
        weights: ``[P]`` area of each cell.

    Returns:
        ``[K]`` bool.
    """
    pair_weights = weights[pair_cells]  # [E]
    area = torch.zeros(num, dtype=weights.dtype, device=weights.device).index_add(
        0, pair_instances, pair_weights
    )
    keep = area > 0
    for _ in range(num):
        first = first_kept(pair_cells, pair_instances, keep, len(weights))  # [P]
        covered = first[pair_cells] < pair_instances  # [E]
        cover = torch.zeros_like(area).index_add(0, pair_instances, pair_weights * covered)
        new_keep = (area > 0) & (cover <= overlap_threshold * area)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep

"""Fusion of instance masks and semantic segmentation into one panoptic map (Kirillov et al.).

The rules, as detectron2's ``combine_semantic_and_instance_outputs`` states them:

1. instances are placed by decreasing score; an instance whose mask is already covered by
   more than ``overlap_threshold`` of its area (by instances placed before it) is dropped,
   otherwise it takes the pixels of its mask that are still free (:func:`place_instances`);
2. pixels no instance took get the semantic argmax if it is a stuff class;
3. a stuff class covering fewer than ``stuff_area`` of those pixels becomes void, and
   thing-class pixels that no instance took become void (255) (:func:`stuff_lookup`).

Rule 1 is sequential by nature. It is computed here without a loop over instances: given
which instances are kept, every overlap follows from one "first kept owner" per pixel; the
keep decisions are then iterated to their fixed point, which is the sequential answer (after
t rounds the first t decisions are final; real images settle in two or three rounds).

Masks arrive as a sparse list of (unit, instance) pairs over *units*, each a set of pixels
that decide alike, with its pixel count as weight: the decoder's units are blocks of pixels
and single pixels (:mod:`~rt_panoptic_ros.panoptic.sampling`). A unit lies in one to a few
masks out of up to a hundred, so every step costs O(pairs) instead of O(units x instances),
and areas and the thresholds on them are exactly those of the full-resolution output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rt_panoptic_ros.panoptic.sampling import pick

#: Semantic id of void pixels (unlabelled, dropped stuff, orphan thing pixels).
VOID = 255
#: Void id of models with more than 255 classes, whose semantic maps are 16-bit.
VOID_16BIT = 65535


def void_label(num_classes: int) -> int:
    """The semantic id of void: 255, or 65535 for models with more than 255 classes."""
    return VOID if num_classes <= VOID else VOID_16BIT


@dataclass
class Placement:
    """Rule 1's outcome: which instances are kept and which unit each one owns.

    Attributes:
        owner: ``[U]`` int64 the instance (index into the K masks) owning each unit, K = none.
        new_id: ``[K + 1]`` int64 segment id 1..K' of each kept instance, 0 for dropped ones
            and for the "none" owner K.
        kept: ``[K']`` int64 indices of the kept instances, in id order.
        areas: ``[K']`` pixels each kept instance owns.
    """

    owner: Tensor
    new_id: Tensor
    kept: Tensor
    areas: Tensor

    @property
    def owned(self) -> Tensor:
        """``[U]`` bool: the unit belongs to an instance."""
        return self.owner < len(self.new_id) - 1


def place_instances(
    pair_units: Tensor, pair_instances: Tensor, num: int, weights: Tensor, overlap_threshold: float
) -> Placement:
    """Rule 1 over units (masks sorted by decreasing score).

    Args:
        pair_units, pair_instances: ``[E]`` int64: unit ``pair_units[e]`` lies in mask
            ``pair_instances[e]`` (0 = highest score). Each pair at most once.
        num: K, the number of masks.
        weights: ``[U]`` pixels of each unit.
    """
    # A unit in one mask is never covered: only its weight matters, so the units of one mask
    # alone are pooled into one unit per mask; the overlaps are decided on the units in two
    # or more masks (few) and these K pools, with exactly the same areas and covers.
    device = weights.device
    shared_pair = pick(torch.bincount(pair_units, minlength=len(weights)), pair_units) > 1  # [E]
    shared, shared_unit = torch.unique(pair_units[shared_pair], return_inverse=True)
    pools = torch.arange(num, device=device)
    units = torch.cat((shared_unit, pools + len(shared)))
    instances = torch.cat((pair_instances[shared_pair], pools))
    # The shared pairs add 0 to the pools (a product, not a selection of the other pairs).
    unit_weights = torch.cat(
        (pick(weights, shared), torch.zeros(num, dtype=weights.dtype, device=device).index_add_(
            0, pair_instances, pick(weights, pair_units) * ~shared_pair))
    )  # fmt: skip
    keep = resolve_overlaps(units, instances, num, unit_weights, overlap_threshold)  # [K]
    owner = first_kept(pair_units, pair_instances, keep, len(weights))  # [U], K = none
    new_id = torch.zeros(num + 1, dtype=torch.long, device=device)
    new_id[:num] = torch.cumsum(keep.long(), 0) * keep  # ids 1..K' in score order
    kept = keep.nonzero().squeeze(1)
    instance = pick(new_id, first_kept(units, instances, keep, len(unit_weights)))
    areas = torch.zeros(len(kept) + 1, device=device, dtype=weights.dtype)
    areas.index_add_(0, instance, unit_weights)
    return Placement(owner=owner, new_id=new_id, kept=kept, areas=areas[1:])


def stuff_lookup(stuff_pixels: Tensor, is_thing: Tensor, stuff_area: float) -> Tensor:
    """Rules 2-3 as a table: the label of a free pixel, by its semantic argmax.

    Args:
        stuff_pixels: ``[C]`` free pixels of each semantic class (thing classes included).

    Returns:
        ``[C]`` int64: the class itself for stuff classes with at least ``stuff_area`` free
        pixels, :func:`void_label` for the rest.
    """
    ids = torch.arange(len(is_thing), device=is_thing.device)
    return torch.where(is_thing | (stuff_pixels < stuff_area), void_label(len(is_thing)), ids)


@dataclass
class FusedCells:
    """A fused panoptic map over units that each have one semantic class.

    Attributes:
        semantic: ``[U]`` int64 class per unit, :func:`void_label` = void.
        instance: ``[U]`` int64, 0 = no instance, k = k-th kept instance (1-based).
        kept: ``[K']`` int64 indices (into the input masks) of the kept instances, in id order.
        areas: ``[K']`` pixels of each kept instance.
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
    """Fuse instance masks (sorted by decreasing score) with the semantic argmax of each unit.

    Args:
        pair_cells, pair_instances: ``[E]`` int64: unit ``pair_cells[e]`` lies in mask
            ``pair_instances[e]`` (0 = highest score). Each pair at most once.
        mask_classes: ``[K]`` int64 semantic class of each instance.
        semantic_argmax: ``[U]`` int64 semantic class per unit.
        is_thing: ``[C]`` bool, True for thing classes.
        weights: ``[U]`` pixels each unit stands for.
        overlap_threshold: drop an instance covered by more than this fraction of its area.
        stuff_area: stuff classes with fewer free pixels than this become void.
    """
    placed = place_instances(pair_cells, pair_instances, len(mask_classes), weights, overlap_threshold)
    owned = placed.owned
    free = torch.zeros(len(is_thing), dtype=weights.dtype, device=weights.device)
    free.index_add_(0, semantic_argmax[~owned], weights[~owned])
    stuff = stuff_lookup(free, is_thing, stuff_area)[semantic_argmax]
    classes = torch.cat((mask_classes, mask_classes.new_zeros(1)))
    semantic = torch.where(owned, classes[placed.owner], stuff)
    return FusedCells(
        semantic=semantic, instance=placed.new_id[placed.owner], kept=placed.kept, areas=placed.areas
    )


def first_kept(pair_cells: Tensor, pair_instances: Tensor, keep: Tensor, num_cells: int) -> Tensor:
    """Per cell, the first (highest-score) kept instance whose mask covers it.

    Returns:
        ``[num_cells]`` int64 instance index, ``K`` where no kept mask covers the cell.
    """
    # A pair of a dropped instance offers K, the value every cell starts from: no selection.
    offered = torch.where(pick(keep, pair_instances), pair_instances, len(keep))
    first = torch.full((num_cells,), len(keep), dtype=torch.long, device=keep.device)
    return first.scatter_reduce(0, pair_cells, offered, reduce="amin")


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
    pair_weights = pick(weights, pair_cells)  # [E]
    area = torch.zeros(num, dtype=weights.dtype, device=weights.device).index_add(
        0, pair_instances, pair_weights
    )
    keep = area > 0
    for _ in range(num):
        first = first_kept(pair_cells, pair_instances, keep, len(weights))  # [P]
        covered = pick(first, pair_cells) < pair_instances  # [E]
        cover = torch.zeros_like(area).index_add(0, pair_instances, pair_weights * covered)
        new_keep = (area > 0) & (cover <= overlap_threshold * area)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep

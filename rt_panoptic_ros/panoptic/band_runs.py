"""The band of a huge image, decided in runs: bounded memory, the same maps and segments.

The band (pixels whose four stride-4 cells disagree, :class:`~rt_panoptic_ros.panoptic.pixels.Band`)
grows with how far the image is upscaled from the network input. Up to :data:`CHUNK_PIXELS`
slots the decoder takes it in one step; a larger one goes through its per-pixel steps in runs
of :data:`RUN_PIXELS` slots, in two passes:

1. :func:`place_band_in_runs`: for each run, the masks each pixel lies in (as bit words) and
   its semantic class; the pixels are counted per distinct (mask set, class) over all runs.
   Kirillov fusion (rule 1) sees a pixel only through its mask set, so those counts are
   exactly its units: the same areas, overlaps and keep decisions as pixel by pixel.
2. :func:`write_band_in_runs`: each run's masks read again, each pixel's owner the first kept
   instance it lies in, written to the maps with the segments' extents.

Only one run's int64 state exists at a time (each run is a function of its own, so that its
tensors are gone before the next run's exist).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rt_panoptic_ros.config import DecoderConfig
from rt_panoptic_ros.panoptic.fusion import Placement, first_kept, place_instances
from rt_panoptic_ros.panoptic.output_maps import OutputMaps, band_extents
from rt_panoptic_ros.panoptic.pixels import Band, CellMasks, band_mask_pairs, membership_words, word_members
from rt_panoptic_ros.panoptic.sampling import AxisBlocks, AxisSampling

#: Slots of the band decided per step. A band larger than this (images far larger than the
#: network input) goes through its per-pixel steps in runs of blocks, so that only one run's
#: int64 state (pairs, classes, owners, coordinates) exists at a time. An image up to
#: 1024x2048 (2^21 pixels, a fraction of them in the band) takes the one-step path, as before.
CHUNK_PIXELS = 1 << 22
#: Slots per run of a band larger than :data:`CHUNK_PIXELS` (a free band: of any size):
#: small enough that a run's temporaries stay within a fraction of the output maps.
RUN_PIXELS = 1 << 20


def place_band_in_runs(
    cell_masks: CellMasks,
    band: Band,
    axes: tuple[AxisBlocks, AxisBlocks],
    sampling: tuple[AxisSampling, AxisSampling],
    semantic: Tensor,
    block_pairs: tuple[Tensor, Tensor],
    block_weights: Tensor,
    num_queries: int,
    num_classes: int,
    d: DecoderConfig,
) -> tuple[Placement, Tensor]:
    """Rule 1 over the blocks and a band too large for one step, run by run.

    Rule 1 sees a pixel only through the set of masks it lies in, so the band's pixels are
    counted per distinct (mask set, semantic class) over all runs first; those counts are the
    band's units, with exactly the areas and overlaps of its pixels. Owners per pixel then
    follow from the kept instances alone (:func:`write_band_in_runs`).

    Returns:
        the placement over ``[R * C]`` blocks then the units, and ``[C]`` int64 free band
        pixels per semantic class.
    """
    num_words = cell_masks.words.shape[-1]
    keys, counts = [], []
    for run in band.chunks(RUN_PIXELS):
        distinct, count = _count_run(cell_masks, run, axes, sampling, semantic, num_words, d.mask_thresh)
        keys.append(distinct)
        counts.append(count)
    keys, inverse = _distinct_rows(torch.cat(keys))  # [S, words + 1]
    weights = torch.zeros(len(keys), dtype=torch.long, device=keys.device)
    weights.index_add_(0, inverse, torch.cat(counts))  # [S] pixels of each unit
    units, queries = word_members(keys[:, :num_words])
    num_blocks = len(block_weights)
    placed = place_instances(
        torch.cat((block_pairs[0], units + num_blocks)),
        torch.cat((block_pairs[1], queries)),
        num_queries,
        torch.cat((block_weights, weights)),
        d.overlap_threshold,
    )
    free = ~placed.owned[num_blocks:]
    free_pixels = torch.zeros(num_classes, dtype=torch.long, device=keys.device)
    return placed, free_pixels.index_add_(0, keys[:, -1][free], weights[free])


def write_band_in_runs(
    maps: OutputMaps,
    cell_masks: CellMasks,
    band: Band,
    axes: tuple[AxisBlocks, AxisBlocks],
    sampling: tuple[AxisSampling, AxisSampling],
    semantic: Tensor,
    placed: Placement,
    classes: Tensor,
    stuff: Tensor,
    num_queries: int,
    d: DecoderConfig,
) -> tuple[Tensor, Tensor]:
    """Write the band run by run (M_j read again, owners from the kept instances).

    Returns:
        ``[2, K' + 1]`` lowest ``(x, y)`` and highest ``(x + 1, y + 1)`` of each kept instance's
        band pixels (column 0: none) (see :func:`~rt_panoptic_ros.panoptic.output_maps.box_extents`).
    """
    keep = placed.new_id[:num_queries] > 0
    extents = None
    for run in band.chunks(RUN_PIXELS):
        extents = _write_run(
            maps, cell_masks, run, axes, sampling, semantic, placed, keep, classes, stuff, d, extents
        )
    return extents


def _count_run(
    cell_masks: CellMasks,
    run: Band,
    axes: tuple[AxisBlocks, AxisBlocks],
    sampling: tuple[AxisSampling, AxisSampling],
    semantic: Tensor,
    num_words: int,
    mask_thresh: float,
) -> tuple[Tensor, Tensor]:
    """The distinct ``(mask words..., class)`` rows of a run's pixels and their pixel counts
    (a function, so that a run's per-pixel tensors are gone before the next run's exist)."""
    slots, queries = band_mask_pairs(cell_masks, run, axes, sampling, mask_thresh)
    valid = run.valid.reshape(-1)
    words = membership_words(slots, queries, len(run), num_words)[valid]  # [n, words]
    del slots, queries
    rows = torch.cat((words, run.read(semantic).reshape(-1)[valid].long()[:, None]), 1)  # [n, words + 1]
    del words
    distinct, inverse = _distinct_rows(rows)
    return distinct, torch.bincount(inverse, minlength=len(distinct))


def _distinct_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.unique(rows, dim=0, return_inverse=True)`` in some order of the distinct rows,
    column by column (a 1-D unique per column is many times faster than ``unique_dim``)."""
    key = torch.zeros(len(rows), dtype=torch.long, device=rows.device)
    for column in rows.unbind(1):
        values, inverse = torch.unique(column, return_inverse=True)
        key = torch.unique(key * len(values) + inverse, return_inverse=True)[1]  # < len(rows)
    num_distinct = int(key.max()) + 1 if len(key) else 0
    first = torch.zeros(num_distinct, dtype=torch.long, device=rows.device)
    first.scatter_(0, key, torch.arange(len(key), device=rows.device))  # a row of each
    return rows[first], key


def _write_run(
    maps: OutputMaps,
    cell_masks: CellMasks,
    run: Band,
    axes: tuple[AxisBlocks, AxisBlocks],
    sampling: tuple[AxisSampling, AxisSampling],
    semantic: Tensor,
    placed: Placement,
    keep: Tensor,
    classes: Tensor,
    stuff: Tensor,
    d: DecoderConfig,
    extents: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor]:
    """One run of :func:`write_band_in_runs`; returns ``extents`` with the run's owned pixels."""
    slots, queries = band_mask_pairs(cell_masks, run, axes, sampling, d.mask_thresh)
    owner = first_kept(slots, queries, keep, len(run))  # [n], K = none
    del slots, queries
    owned = owner < len(keep)
    run_classes = run.read(semantic).reshape(-1).long()
    run.write(maps.semantic, torch.where(owned, classes[owner], stuff[run_classes]))
    del run_classes
    ids = placed.new_id[owner]
    run.write(maps.instance, ids)
    return band_extents(run, ids, len(placed.kept), extents)

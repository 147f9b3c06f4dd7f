"""The parameter-free panoptic decoder: raw head outputs -> panoptic segmentation (paper Sec. 3).

``decode`` chains the steps of the paper on whatever device the outputs are on, batched and
without loops over classes, boxes or pixels:

1. queries: thresholded, top-k, class-aware NMS over the dense detections (Eq. 4);
2. the dense box map B(x, y) chosen per stride-4 cell by the levelness (Eq. 14);
3. mask probabilities P_loc * P_sem per cell and query (Eq. 5-6), kept as the sparse
   (cell, query) pairs above sigma (Eq. 7);
4. every decision at the image's own pixels, as the original implementation makes them: the
   mask probabilities and the semantic logits read bilinearly through every resize, then
   thresholded / argmax'ed (:mod:`~rt_panoptic_ros.panoptic.sampling`). Only where the four
   cells a pixel reads disagree is anything computed per pixel (:mod:`.pixels`);
5. Kirillov fusion over blocks of pixels that decide alike and the single pixels that do
   not, with their pixel counts as weights, so areas and thresholds are exact.

It reads the outputs by field name only, so it serves every backend (PyTorch, ONNX Runtime,
TensorRT) and never imports the network.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rt_panoptic_ros.config import Config, DecoderConfig
from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.panoptic import band_runs
from rt_panoptic_ros.panoptic.boxes import BOX_MAP_STRIDE, box_iou, box_levels, clip_boxes, dense_boxes_at
from rt_panoptic_ros.panoptic.fusion import place_instances, stuff_lookup
from rt_panoptic_ros.panoptic.geometry import ImageGeometry, image_geometry
from rt_panoptic_ros.panoptic.masks import Queries, instance_masks, select_queries
from rt_panoptic_ros.panoptic.output_maps import OutputMaps, segment_boxes
from rt_panoptic_ros.panoptic.pixels import (
    Band,
    CellMasks,
    band_mask_pairs,
    semantic_at_pixels,
)
from rt_panoptic_ros.panoptic.result import PanopticResult
from rt_panoptic_ros.panoptic.sampling import any_in_windows, corner_disagreement, pick

ImageSize = tuple[int, int]


def decode(
    outputs: Any,
    cfg: Config,
    image_size: ImageSize | Sequence[ImageSize],
    output_size: ImageSize | Sequence[ImageSize] | None = None,
) -> list[PanopticResult]:
    """Decode a batch of head outputs into one :class:`PanopticResult` per image.

    Args:
        outputs: :class:`~rt_panoptic_ros.model.HeadOutputs` (or anything with its five
            fields) of N images: ``semantic_logits [N,C,H'/8,W'/8]``, ``levelness_logits
            [N,L+1,H'/4,W'/4]``, L x ``box_cls [N,C_th,h,w]``, ``box_reg [N,4,h,w]``,
            ``centerness [N,1,h,w]`` for an input of ``H' x W'``.
        cfg: ``cfg.decoder`` thresholds and ``cfg.dataset`` class meaning.
        image_size: ``(h, w)`` of the image in the top-left of the (padded) input, one for
            the whole batch or one per image; ``h <= H'``, ``w <= W'``.
        output_size: ``(H, W)`` of the original image when it was resized to ``image_size``
            for the network; the results are decided at this size. Default: ``image_size``.

    Returns:
        N results with ``[H, W]`` maps on the outputs' device.
    """
    semantic_logits = outputs.semantic_logits.float()
    levelness_logits = outputs.levelness_logits.float()
    box_reg = [r.float() for r in outputs.box_reg]
    n, num_classes = semantic_logits.shape[:2]
    h4, w4 = levelness_logits.shape[-2:]
    contents = _image_sizes(image_size, n, (h4 * BOX_MAP_STRIDE, w4 * BOX_MAP_STRIDE))
    sizes = contents if output_size is None else _image_sizes(output_size, n, None, "output_size")
    device = semantic_logits.device
    thing_ids = torch.tensor(cfg.dataset.thing_ids, dtype=torch.long, device=device)
    is_thing = torch.zeros(num_classes, dtype=torch.bool, device=device)
    is_thing[thing_ids] = True

    queries = select_queries(
        [c.float() for c in outputs.box_cls], box_reg, [o.float() for o in outputs.centerness],
        contents, cfg.decoder,
    )  # fmt: skip
    levels = box_levels(levelness_logits, cfg.decoder.box_map_background)  # [N, h4, w4], 0 = no box
    # P_sem at stride 4: the stride-8 logits upsampled bilinearly, as the original.
    logits4 = F.interpolate(semantic_logits, size=(h4, w4), mode="bilinear", align_corners=False)

    results = []
    for i, (content, size) in enumerate(zip(contents, sizes, strict=True)):  # sizes and queries differ
        q = queries.of_image(i)
        confident = q.scores >= cfg.decoder.instance_score_thresh
        q = Queries(q.image[confident], q.boxes[confident], q.labels[confident], q.scores[confident])
        results.append(
            _decode_image(
                semantic_logits[i], logits4[i], levels[i], [r[i] for r in box_reg], q, content, size, cfg,
                thing_ids, is_thing,
            )
        )  # fmt: skip
    return results


def _decode_image(
    logits8: Tensor,
    logits4: Tensor,
    level: Tensor,
    box_reg: list[Tensor],
    q: Queries,
    content: ImageSize,
    size: ImageSize,
    cfg: Config,
    thing_ids: Tensor,
    is_thing: Tensor,
) -> PanopticResult:
    """One image: ``logits8 [C, h8, w8]``, ``logits4 [C, h4, w4]``, ``level [h4, w4]``."""
    d = cfg.decoder
    geo = image_geometry(size, content, tuple(level.shape), tuple(logits8.shape[1:]), logits8.device)
    rows4, cols4, rows8, cols8 = geo.rows4, geo.cols4, geo.rows8, geo.cols8

    # The masks on the stride-4 cells, and where neighbouring cells disagree.
    cell_masks = _cell_masks(logits4, level, box_reg, q, content, geo, d, thing_ids)
    words = cell_masks.words
    mask_mixed = corner_disagreement(words[..., 0] if words.shape[-1] == 1 else words)  # [hn, wn]
    hn8, wn8 = geo.cells8
    semantic8 = logits8[:, :hn8, :wn8].max(dim=0).indices  # [hn8, wn8] argmax
    semantic_mixed = corner_disagreement(semantic8)

    # Blocks of pixels reading the same four stride-4 cells.
    rows, cols = rows4.blocks, cols4.blocks
    block_mask_mixed = pick(mask_mixed.view(-1), geo.block_cells).view(len(rows), len(cols))  # [R, C]
    # [R, C]: some pixel of the block reads a square of mixed argmax
    block_semantic_mixed = any_in_windows(semantic_mixed, *geo.windows8)
    pixel_count, block_cells = geo.pixel_count, geo.block_cells  # [R * C]; top-left cell

    # Rule 1 of the fusion over units: blocks whose corners agree on every mask, and the
    # single pixels of the other blocks (their M_j read bilinearly).
    agree = (~block_mask_mixed).reshape(-1)
    in_masks = (agree & pick(cell_masks.has_masks, block_cells)).nonzero().squeeze(1)  # few blocks
    block_pairs = cell_masks.expand(in_masks, pick(block_cells, in_masks))
    band = Band.of(block_mask_mixed, rows, cols)
    num_blocks = len(pixel_count)
    num_classes = len(is_thing)
    maps = OutputMaps.allocate(cfg)
    semantic = semantic_at_pixels(
        logits8, semantic8, semantic_mixed, (rows8, cols8), geo.squares8, maps.semantic_dtype
    )
    block_weights = pixel_count * agree
    one_chunk = len(band) <= band_runs.CHUNK_PIXELS  # else runs of blocks, rule 1 over mask sets
    if one_chunk:
        band_pairs = band_mask_pairs(cell_masks, band, (rows, cols), (rows4, cols4), d.mask_thresh)
        placed = place_instances(
            torch.cat((block_pairs[0], band_pairs[0] + num_blocks)),
            torch.cat((block_pairs[1], band_pairs[1])),
            len(q.boxes),
            torch.cat((block_weights, band.valid.reshape(-1).long())),
            d.overlap_threshold,
        )
        band_owned = placed.owned[num_blocks:]
        band_classes = band.read(semantic).reshape(-1).long()
        band_free = band.valid.reshape(-1) & ~band_owned
        band_free_pixels = torch.bincount(band_classes[band_free], minlength=num_classes)
    else:
        placed, band_free_pixels = band_runs.place_band_in_runs(
            cell_masks, band, (rows, cols), (rows4, cols4), semantic, block_pairs, block_weights,
            len(q.boxes), num_classes, d,
        )  # fmt: skip
    block_owned = placed.owned[:num_blocks]

    # Rules 2-3: free pixels take their semantic argmax: per block where it is one class,
    # per pixel in the band and in the free blocks whose stride-8 cells disagree.
    free = Band.of(
        (block_semantic_mixed.reshape(-1) & agree & ~block_owned).view_as(block_mask_mixed), rows, cols
    )
    block_semantic = pick(semantic8.view(-1), geo.block_cells8)
    whole = agree & ~block_owned & ~block_semantic_mixed.reshape(-1)  # free blocks of one class
    free_pixels = torch.bincount(
        block_semantic, weights=(pixel_count * whole).double(), minlength=num_classes
    )
    free_pixels += band_free_pixels
    one_free_run = len(free) <= band_runs.CHUNK_PIXELS  # else runs, their classes read twice
    free_step = band_runs.CHUNK_PIXELS if one_free_run else band_runs.RUN_PIXELS
    free_classes = None
    for run in free.chunks(free_step):
        run_classes = run.read(semantic).reshape(-1).long()
        free_pixels += torch.bincount(run_classes[run.valid.reshape(-1)], minlength=num_classes)
        free_classes = run_classes if one_free_run else None
    stuff = stuff_lookup(free_pixels, is_thing, d.stuff_area)

    # The maps: per block, then the owned blocks (few), then per pixel where blocks are mixed.
    classes = torch.cat((thing_ids[q.labels], thing_ids.new_zeros(1)))  # owner K = none
    owned_blocks = torch.unique_consecutive(block_pairs[0])  # the blocks in some mask, sorted
    owned_blocks = owned_blocks[pick(block_owned, owned_blocks)]
    owners = pick(placed.owner, owned_blocks)
    maps.fill(
        pick(stuff, block_semantic).index_copy_(0, owned_blocks, pick(classes, owners)),
        torch.zeros_like(block_semantic).index_copy_(0, owned_blocks, pick(placed.new_id, owners)),
        rows,
        cols,
    )
    if one_chunk:
        band_owner = placed.owner[num_blocks:]
        band_ids = pick(placed.new_id, band_owner)
        band_semantic = torch.where(band_owned, pick(classes, band_owner), pick(stuff, band_classes))
        band.write(maps.semantic, band_semantic)
        band.write(maps.instance, band_ids)
        boxes = segment_boxes(placed, owned_blocks, band_ids, (rows, cols), band)
    else:
        extents = band_runs.write_band_in_runs(
            maps, cell_masks, band, (rows, cols), (rows4, cols4), semantic, placed, classes, stuff,
            len(q.boxes), d,
        )  # fmt: skip
        boxes = segment_boxes(placed, owned_blocks, None, (rows, cols), band, extents)
    for run in free.chunks(free_step):
        run_classes = free_classes if one_free_run else run.read(semantic).reshape(-1).long()
        run.write(maps.semantic, pick(stuff, run_classes))
    return maps.result(placed, q, classes, boxes)


def _cell_masks(
    logits4: Tensor,
    level: Tensor,
    box_reg: list[Tensor],
    q: Queries,
    content: ImageSize,
    geo: ImageGeometry,
    d: DecoderConfig,
    thing_ids: Tensor,
) -> CellMasks:
    """M_j on the stride-4 cells the image reads (Eq. 5-7), as sparse (cell, query) pairs."""
    h4, w4 = level.shape
    hn, wn = geo.cells4  # cells the pixels read
    logits = logits4[:, :hn, :wn].reshape(logits4.shape[0], -1)  # [C, P]
    level = level[:hn, :wn].reshape(-1)  # [P]
    limits = torch.tensor(content, device=level.device)

    def thing_probability(cells: Tensor) -> Tensor:
        """P_sem of every thing class at some cells, ``[P', C_th]``: softmax of the logits."""
        at = logits.index_select(1, cells).T  # [P', C]
        return (at.index_select(1, thing_ids) - at.logsumexp(dim=1, keepdim=True)).exp()

    def boxes_at(cells: Tensor) -> Tensor:
        """B(x, y) of cells of the [hn, wn] grid (any level >= 1), clipped like the queries."""
        boxes = dense_boxes_at(box_reg, cells // wn, cells % wn, pick(level, cells).clamp(min=1), (h4, w4))
        return clip_boxes(boxes, limits)

    # M_j = P_loc * P_sem > sigma needs a box and P_sem > sigma (P_loc <= 1): only such
    # cells can be in a mask, which leaves out most of a street scene before the [P, K] work.
    # P_sem(c) <= exp(l_c - max_c' l_c') rules most cells out before any softmax is taken.
    near = (
        logits.index_select(0, thing_ids).amax(dim=0) - logits.amax(dim=0) > math.log(d.mask_thresh)
        if d.mask_thresh > 0
        else True
    )
    # Nearby cells together: taken in the cached tile order, no sort per frame.
    candidate = pick((level > 0) & near, geo.by_tile).nonzero().squeeze(1)
    cells, tiles = pick(geo.by_tile, candidate), pick(geo.tile_of, candidate)
    probability = thing_probability(cells)
    keep = (probability.amax(dim=1) > d.mask_thresh).nonzero().squeeze(1)
    cells, tiles, probability = pick(cells, keep), pick(tiles, keep), pick(probability, keep)
    boxes = boxes_at(cells)
    pair_cells, pair_queries = instance_masks(
        boxes, tiles, q.boxes, q.labels, probability, d.iou_variant, d.mask_thresh
    )
    known = torch.full((hn * wn,), -1, dtype=torch.long, device=cells.device)
    known.index_copy_(0, cells, torch.arange(len(cells), device=cells.device))  # row of boxes, probability

    def value(cells: Tensor, queries: Tensor) -> Tensor:
        """P_loc * P_sem of (cell, query) pairs (Eq. 5-6); 0 for cells without a box."""
        # Neighbouring blocks share corners: each cell once, and its box and P_sem computed
        # above when it is in some mask's reach; the rest with a box now (a row of zeros last,
        # read by the cells without a box).
        seen = torch.zeros(hn * wn, dtype=torch.bool, device=cells.device)
        seen.index_fill_(0, cells, True)
        distinct = seen.nonzero().squeeze(1)
        row = pick(known, distinct)
        missing = (row < 0) & (pick(level, distinct) > 0)
        new = distinct[missing]
        row[missing] = torch.arange(len(new), device=cells.device) + len(boxes)
        row = torch.where(row < 0, len(boxes) + len(new), row)  # no box: the row of zeros
        slot = torch.empty(hn * wn, dtype=torch.long, device=cells.device)
        slot.index_copy_(0, distinct, row)
        at = pick(slot, cells)
        cell_boxes = torch.cat((boxes, boxes_at(new), boxes.new_zeros(1, 4)))
        no_sem = probability.new_zeros((1, probability.shape[1]))
        p_sem = torch.cat((probability, thing_probability(new), no_sem))
        p_loc = box_iou(pick(cell_boxes, at), pick(q.boxes, queries), d.iou_variant)
        p_sem_pair = pick(p_sem.view(-1), at * p_sem.shape[1] + pick(q.labels, queries))
        return torch.where(pick(level, cells) > 0, p_loc * p_sem_pair, 0.0)

    return CellMasks.from_pairs(pick(cells, pair_cells), pair_queries, (hn, wn), len(q.boxes), value)


def _image_sizes(
    image_size: ImageSize | Sequence[ImageSize], n: int, padded: ImageSize | None, name: str = "image_size"
) -> list[ImageSize]:
    """One ``(H, W)`` per image, checked against the padded input size (if given)."""
    if len(image_size) == 2 and all(isinstance(v, numbers.Integral) for v in image_size):
        sizes = [tuple(image_size)] * n
    else:
        sizes = [tuple(s) for s in image_size]
    if len(sizes) != n:
        raise InputError(f"{name}: {len(sizes)} sizes for a batch of {n} images")
    for h, w in sizes:
        if not (0 < h and 0 < w):
            raise InputError(f"{name}: ({h}, {w}) is empty")
        if padded is not None and not (h <= padded[0] and w <= padded[1]):
            raise InputError(f"image_size: ({h}, {w}) does not fit the network input {padded[0]}x{padded[1]}")
    return [(int(h), int(w)) for h, w in sizes]

"""The parameter-free panoptic decoder: raw head outputs -> panoptic segmentation (paper Sec. 3).

``decode`` chains the steps of the paper on whatever device the outputs are on, batched and
without loops over classes, boxes or pixels:

1. queries: thresholded, top-k, class-aware NMS over the dense detections (Eq. 4);
2. the dense box map B(x, y) chosen per pixel by the levelness (Eq. 14);
3. masks M_j = IoU(B(x, y), B_j) * P_sem(c_j) > sigma (Eq. 5-7);
4. fusion with the semantic argmax (Kirillov et al.), at stride 4;
5. one nearest upsampling of the final maps to the image's size.

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

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.panoptic.boxes import BOX_MAP_STRIDE, box_levels, clip_boxes, dense_boxes_at
from rt_panoptic_ros.panoptic.fusion import FusedCells, fuse
from rt_panoptic_ros.panoptic.masks import Queries, instance_masks, select_queries
from rt_panoptic_ros.panoptic.result import PanopticResult, Segment, instance_boxes

ImageSize = tuple[int, int]


def decode(outputs: Any, cfg: Config, image_size: ImageSize | Sequence[ImageSize]) -> list[PanopticResult]:
    """Decode a batch of head outputs into one :class:`PanopticResult` per image.

    Args:
        outputs: :class:`~rt_panoptic_ros.model.HeadOutputs` (or anything with its five
            fields) of N images: ``semantic_logits [N,C,H'/8,W'/8]``, ``levelness_logits
            [N,L+1,H'/4,W'/4]``, L x ``box_cls [N,C_th,h,w]``, ``box_reg [N,4,h,w]``,
            ``centerness [N,1,h,w]`` for an input of ``H' x W'``.
        cfg: ``cfg.decoder`` thresholds and ``cfg.dataset`` class meaning.
        image_size: ``(H, W)`` of the image in the top-left of the (padded) input, one for
            the whole batch or one per image; ``H <= H'``, ``W <= W'``.

    Returns:
        N results with ``[H, W]`` maps on the outputs' device.
    """
    semantic_logits = outputs.semantic_logits.float()
    levelness_logits = outputs.levelness_logits.float()
    box_reg = [r.float() for r in outputs.box_reg]
    n, num_classes = semantic_logits.shape[:2]
    h4, w4 = levelness_logits.shape[-2:]
    sizes = _image_sizes(image_size, n, (h4 * BOX_MAP_STRIDE, w4 * BOX_MAP_STRIDE))
    device = semantic_logits.device
    thing_ids = torch.tensor(cfg.dataset.thing_ids, dtype=torch.long, device=device)
    is_thing = torch.zeros(num_classes, dtype=torch.bool, device=device)
    is_thing[thing_ids] = True

    queries = select_queries(
        [c.float() for c in outputs.box_cls], box_reg, [o.float() for o in outputs.centerness],
        sizes, cfg.decoder,
    )  # fmt: skip
    levels = box_levels(levelness_logits)  # [N, h4, w4], 0 = background
    # P_sem at stride 4: the stride-8 logits upsampled bilinearly, as the original.
    semantic_logits = F.interpolate(semantic_logits, size=(h4, w4), mode="bilinear", align_corners=False)

    results = []
    for i, (height, width) in enumerate(sizes):  # images differ in size and query count
        hc, wc = math.ceil(height / BOX_MAP_STRIDE), math.ceil(width / BOX_MAP_STRIDE)
        # Pixels-major [P, C] so that per-pixel reductions read contiguous memory.
        logits = semantic_logits[i, :, :hc, :wc].permute(1, 2, 0).reshape(-1, num_classes)  # [P, C]
        thing_probability = (logits[:, thing_ids] - logits.logsumexp(dim=1, keepdim=True)).exp()  # [P, C_th]
        level = levels[i, :hc, :wc].reshape(-1)  # [P]
        # M_j = P_loc * P_sem > sigma needs a box and P_sem > sigma (P_loc <= 1): only such
        # cells can be in a mask, which leaves out most of a street scene before the [P, K] work.
        cells = torch.nonzero((level > 0) & (thing_probability.amax(dim=1) > cfg.decoder.mask_thresh))
        cells = cells.squeeze(1)  # [P'] indices into the cropped [hc, wc] grid
        cells = cells[torch.argsort(_tile_index(cells, wc), stable=True)]  # nearby cells together
        full_grid_cells = (cells // wc) * w4 + cells % wc  # the same cells in the [h4, w4] grid
        boxes = dense_boxes_at(box_reg, i, full_grid_cells, level[cells], (h4, w4))  # [P', 4]
        # Queries are clipped to the image, so are the pixels' boxes: IoUs of visible extents.
        boxes = clip_boxes(boxes, torch.tensor([height, width], device=device))
        q = queries.of_image(i)
        pair_cells, pair_queries = instance_masks(
            boxes,
            q.boxes,
            q.labels,
            thing_probability[cells],
            cfg.decoder.iou_variant,
            cfg.decoder.mask_thresh,
        )  # M_j as (cell, query) pairs
        fused = fuse(
            cells[pair_cells], pair_queries, thing_ids[q.labels], logits.max(dim=1).indices, is_thing,
            cell_weights(height, width, device), cfg.decoder.overlap_threshold, cfg.decoder.stuff_area,
        )  # fmt: skip
        results.append(_to_result(fused, q, thing_ids[q.labels], (hc, wc), (height, width), cfg))
    return results


#: Side (in stride-4 cells) of the square tiles the mask computation walks the image by.
_TILE = 16


def _tile_index(cells: Tensor, width: int) -> Tensor:
    """Row-major index of the ``_TILE x _TILE`` tile of each cell of a grid ``width`` wide."""
    rows, cols = cells // width, cells % width
    return (rows // _TILE) * ((width + _TILE - 1) // _TILE) + cols // _TILE


def cell_weights(height: int, width: int, device: torch.device) -> Tensor:
    """``[ceil(H/4) * ceil(W/4)]`` output pixels each stride-4 cell becomes (16, less at the edges)."""
    s = BOX_MAP_STRIDE
    wy = torch.full((math.ceil(height / s),), float(s), device=device)
    wx = torch.full((math.ceil(width / s),), float(s), device=device)
    wy[-1] = height - s * (len(wy) - 1)
    wx[-1] = width - s * (len(wx) - 1)
    return (wy[:, None] * wx[None, :]).reshape(-1)


def upsample_cells(cells: Tensor, height: int, width: int) -> Tensor:
    """Nearest upsampling of a ``[h, w]`` stride-4 map to ``[height, width]`` (one copy)."""
    h, w = cells.shape
    s = BOX_MAP_STRIDE
    full = cells[:, None, :, None].expand(h, s, w, s).reshape(h * s, w * s)
    return full[:height, :width].contiguous()


def _to_result(
    fused: FusedCells, q: Queries, classes: Tensor, cells: ImageSize, size: ImageSize, cfg: Config
) -> PanopticResult:
    hc, wc = cells
    height, width = size
    semantic_dtype = torch.uint8 if cfg.dataset.num_classes <= 255 else torch.int32
    instance_dtype = torch.int16 if cfg.decoder.max_detections <= 32767 else torch.int32
    semantic = upsample_cells(fused.semantic.view(hc, wc).to(semantic_dtype), height, width)
    instance = upsample_cells(fused.instance.view(hc, wc).to(instance_dtype), height, width)
    boxes = instance_boxes(fused.instance.view(hc, wc), len(fused.kept), size, cell=BOX_MAP_STRIDE)
    # One host transfer for all the per-instance numbers.
    columns = zip(
        classes[fused.kept].tolist(), q.scores[fused.kept].tolist(), boxes.tolist(),
        fused.areas.round().long().tolist(), strict=True,
    )  # fmt: skip
    segments = [
        Segment(id=k, category_id=c, score=s, bbox=tuple(b), area=a)
        for k, (c, s, b, a) in enumerate(columns, start=1)
    ]
    return PanopticResult(semantic=semantic, instance=instance, segments=segments)


def _image_sizes(image_size: ImageSize | Sequence[ImageSize], n: int, padded: ImageSize) -> list[ImageSize]:
    """One ``(H, W)`` per image, checked against the padded input size."""
    if len(image_size) == 2 and all(isinstance(v, numbers.Integral) for v in image_size):
        sizes = [tuple(image_size)] * n
    else:
        sizes = [tuple(s) for s in image_size]
    if len(sizes) != n:
        raise InputError(f"image_size: {len(sizes)} sizes for a batch of {n} images")
    for h, w in sizes:
        if not (0 < h <= padded[0] and 0 < w <= padded[1]):
            raise InputError(f"image_size: ({h}, {w}) does not fit the network input {padded[0]}x{padded[1]}")
    return [(int(h), int(w)) for h, w in sizes]

"""A slow, obviously correct panoptic decoder: the definition the fast one must match.

Dense and at full resolution, written for reading, not speed: every query's mask probability
on the whole stride-4 grid (the box map upsampled as the original implementation does, with
``F.interpolate``), read bilinearly at every image pixel, thresholded; the semantic logits read
bilinearly at every pixel, then the argmax; then Kirillov fusion as a plain loop over the
queries in decreasing score (detectron2's ``combine_semantic_and_instance_outputs``).

Only query selection (thresholds, top-k, NMS) is shared with the package: it is not what the
fast decoder's full-resolution machinery changes, and it is tested on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.panoptic.boxes import box_iou
from rt_panoptic_ros.panoptic.fusion import void_label
from rt_panoptic_ros.panoptic.masks import select_queries
from rt_panoptic_ros.panoptic.result import InstanceSegment, PanopticResult


def grid_coordinate(pixels: int, content: int, stride: int, grid: int) -> tuple[torch.Tensor, ...]:
    """For each pixel of an axis: the grid lines it reads and the weight of the second.

    The pixel centre through the image resize, onto the grid (``F.interpolate``'s rule).
    """
    scale = content / (pixels * stride)
    u = ((torch.arange(pixels, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(0, grid - 1)
    low = u.long()
    return low, (low + 1).clamp(max=grid - 1), u - low


def sample(maps: torch.Tensor, size: tuple[int, int], content: tuple[int, int], stride: int) -> torch.Tensor:
    """``[K, h, w]`` grid values -> ``[K, H, W]`` bilinear values at every image pixel."""
    y0, y1, fy = grid_coordinate(size[0], content[0], stride, maps.shape[1])
    x0, x1, fx = grid_coordinate(size[1], content[1], stride, maps.shape[2])
    fy, fx = fy[:, None], fx[None, :]
    v00, v01 = maps[:, y0][:, :, x0], maps[:, y0][:, :, x1]
    v10, v11 = maps[:, y1][:, :, x0], maps[:, y1][:, :, x1]
    return (1 - fy) * ((1 - fx) * v00 + fx * v01) + fy * ((1 - fx) * v10 + fx * v11)


def query_mask_probabilities(outputs, cfg: Config, i: int, queries, content: tuple[int, int]) -> torch.Tensor:
    """P_loc(x, y, j) * P_sem(x, y, c_j) on the stride-4 grid, ``[K, h4, w4]`` (Eq. 5-6)."""
    d = cfg.decoder
    levelness = outputs.levelness_logits[i : i + 1].float()
    h4, w4 = levelness.shape[-2:]
    # Every level's l, t, r, b upsampled to stride 4, as the original's generate_box_feature_map.
    ltrb = torch.stack(
        [F.interpolate(r[i : i + 1].float(), size=(h4, w4), mode="bilinear", align_corners=False)[0]
         for r in outputs.box_reg]
    )  # [L, 4, h4, w4]  # fmt: skip
    if d.box_map_background == "tri":
        level = levelness[0, 1:].argmax(0)  # [h4, w4] level index
        has_box = torch.ones_like(level, dtype=torch.bool)
    else:
        best = levelness[0].argmax(0)
        level, has_box = (best - 1).clamp(min=0), best > 0
    chosen = ltrb.gather(0, level[None, None].expand(1, 4, h4, w4))[0]  # [4, h4, w4]
    ys, xs = torch.meshgrid(torch.arange(h4) * 4.0 + 2, torch.arange(w4) * 4.0 + 2, indexing="ij")
    boxes = torch.stack((xs - chosen[0], ys - chosen[1], xs + chosen[2], ys + chosen[3]), dim=-1)
    limits = torch.tensor([content[1], content[0], content[1], content[0]], dtype=torch.float32)
    boxes = torch.minimum(boxes.clamp(min=0), limits)  # pixel boxes clipped, like the queries
    logits = F.interpolate(outputs.semantic_logits[i : i + 1].float(), size=(h4, w4), mode="bilinear",
                           align_corners=False)[0]  # fmt: skip
    probability = logits.softmax(0)  # [C, h4, w4]
    thing_ids = torch.tensor(cfg.dataset.thing_ids)
    values = []
    for box, label in zip(queries.boxes, queries.labels, strict=True):
        p_loc = box_iou(boxes, box, d.iou_variant)  # [h4, w4]
        values.append(torch.where(has_box, p_loc * probability[thing_ids[label]], 0.0))
    return torch.stack(values) if values else torch.zeros(0, h4, w4)


def reference_decode(outputs, cfg: Config, image_size, output_size=None) -> list[PanopticResult]:
    """Same arguments and results as :func:`rt_panoptic_ros.panoptic.decode`, on the CPU."""
    d = cfg.decoder
    n = outputs.semantic_logits.shape[0]
    contents = [tuple(image_size)] * n if isinstance(image_size[0], int) else [tuple(s) for s in image_size]
    if output_size is None:
        outputs_sizes = contents
    else:
        outputs_sizes = (
            [tuple(output_size)] * n if isinstance(output_size[0], int) else [tuple(s) for s in output_size]
        )
    queries = select_queries(
        [c.float() for c in outputs.box_cls], [r.float() for r in outputs.box_reg],
        [o.float() for o in outputs.centerness], contents, d,
    )  # fmt: skip
    num_classes = outputs.semantic_logits.shape[1]
    void = void_label(num_classes)
    is_thing = torch.zeros(num_classes, dtype=torch.bool)
    is_thing[list(cfg.dataset.thing_ids)] = True
    results = []
    for i, (content, size) in enumerate(zip(contents, outputs_sizes, strict=True)):
        q = queries.of_image(i)
        keep = q.scores >= d.instance_score_thresh
        q = type(q)(q.image[keep], q.boxes[keep], q.labels[keep], q.scores[keep])
        masks = (
            sample(query_mask_probabilities(outputs, cfg, i, q, content), size, content, 4) > d.mask_thresh
        )
        semantic_argmax = sample(outputs.semantic_logits[i].float(), size, content, 8).argmax(0)  # [H, W]
        results.append(_fuse(masks, q, semantic_argmax, cfg, is_thing, void))
    return results


def _fuse(masks, q, semantic_argmax, cfg: Config, is_thing, void) -> PanopticResult:
    """Kirillov fusion, sequentially, in decreasing score."""
    height, width = semantic_argmax.shape
    instance = torch.zeros((height, width), dtype=torch.long)
    semantic = torch.full((height, width), void, dtype=torch.long)
    segments = []
    for mask, label, score in zip(masks, q.labels.tolist(), q.scores.tolist(), strict=True):
        area = int(mask.sum())
        if area == 0:
            continue
        free = mask & (instance == 0)
        if area - int(free.sum()) > cfg.decoder.overlap_threshold * area:
            continue
        k = len(segments) + 1
        instance[free] = k
        category = cfg.dataset.thing_ids[label]
        semantic[free] = category
        ys, xs = free.nonzero().unbind(1)
        bbox = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        segments.append(
            InstanceSegment(id=k, category_id=category, score=score, bbox=bbox, area=int(free.sum()))
        )
    for c in range(len(is_thing)):
        if is_thing[c]:
            continue
        region = (instance == 0) & (semantic_argmax == c)
        if int(region.sum()) >= cfg.decoder.stuff_area:
            semantic[region] = c
    return PanopticResult(semantic=semantic, instance=instance, segments=segments)

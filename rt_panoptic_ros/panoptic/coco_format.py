"""The COCO panoptic format: segment-id PNGs (``id = R + 256 G + 256^2 B``) and ``segments_info``.

Conversions only (numpy / torch); the PNG files themselves are :mod:`rt_panoptic_ros.image_io`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.image_io import VOID_SEGMENT
from rt_panoptic_ros.panoptic.result import PanopticResult, instance_boxes

#: Segment id of stuff class c in a tracked result's COCO map: ``TRACKED_STUFF_BASE + c``,
#: above every track id (1..65535), the same in every frame.
TRACKED_STUFF_BASE = 1 << 16


def category_id(cfg: Config, semantic_id: int) -> int:
    """The dataset category id of semantic class ``semantic_id`` (itself if none are given)."""
    return cfg.dataset.category_ids[semantic_id] if cfg.dataset.category_ids else semantic_id


def categories(cfg: Config) -> list[dict[str, Any]]:
    """``categories`` of a panoptic JSON: id, name, isthing for every semantic class."""
    things = set(cfg.dataset.thing_ids)
    return [
        {"id": category_id(cfg, c), "name": name, "isthing": int(c in things), "supercategory": name}
        for c, name in enumerate(cfg.dataset.class_names)
    ]


def to_coco_panoptic(
    result: PanopticResult, cfg: Config, void: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One result as a segment-id map and its ``segments_info``.

    Instance k keeps id k; every stuff class present becomes one segment with the next ids
    (in class order); void pixels are :data:`VOID_SEGMENT`. Stuff segments carry score 1.0
    (the decoder scores instances only).

    A tracked result (``frame_instance`` set) keeps its ids over time, as video panoptic
    datasets do: an instance's id is its track id (1..65535) and stuff class c is
    :data:`TRACKED_STUFF_BASE` + c in every frame.

    Args:
        void: the semantic id of void in ``result.semantic``.

    Returns:
        ``[H, W]`` uint32 ids and one dict per segment: ``id``, ``category_id`` (dataset
        ids), ``iscrowd`` 0, ``area``, ``bbox`` ``[x, y, w, h]``, ``score``.
    """
    semantic = result.semantic.long()
    instance = result.segment_index.long()  # pixel k = segments[k - 1]
    count = len(result.segments)
    stuff = (instance == 0) & (semantic != void)
    present = torch.unique(semantic[stuff])  # sorted stuff classes present
    stuff_classes = present.tolist()
    lut = torch.zeros(void + 1, dtype=torch.long, device=semantic.device)
    lut[present] = count + 1 + torch.arange(len(present), device=semantic.device)
    ids = torch.where(instance > 0, instance, torch.where(stuff, lut[semantic], VOID_SEGMENT))
    total = count + len(stuff_classes)
    areas = torch.bincount(ids.reshape(-1), minlength=total + 1)[1:].tolist()
    boxes = instance_boxes(ids, total).tolist()
    labels = [s.category_id for s in result.segments] + stuff_classes
    scores = [s.score for s in result.segments] + [1.0] * len(stuff_classes)
    segment_ids = list(range(1, total + 1))
    if result.frame_instance is not None:
        segment_ids = [s.id for s in result.segments] + [TRACKED_STUFF_BASE + c for c in stuff_classes]
        to_tracked = torch.tensor([VOID_SEGMENT, *segment_ids], dtype=torch.long, device=ids.device)
        ids = to_tracked[ids]
    segments_info = [
        {
            "id": k,
            "category_id": category_id(cfg, label),
            "iscrowd": 0,
            "area": int(area),
            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
            "score": round(float(score), 5),
        }
        for k, label, area, box, score in zip(segment_ids, labels, areas, boxes, scores, strict=True)
    ]
    return ids.cpu().numpy().astype(np.uint32), segments_info

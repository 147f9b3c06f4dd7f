"""The panoptic evaluator: ``reset`` / ``process`` / ``evaluate`` over images in the COCO
panoptic format, giving PQ / SQ / RQ (``panoptic_quality.py``) and mIoU (``semantic.py``).

Segments arrive with dataset category ids; they become contiguous ids for the statistics and
dataset ids again only in :meth:`PanopticEvaluator.evaluate`'s results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.training.data.panoptic_format import Category, CategoryMap, Segment, segment_slots
from rt_panoptic_ros.training.evaluation.panoptic_quality import (
    PQStats,
    image_stats,
    joint_histogram,
    pq_average,
)
from rt_panoptic_ros.training.evaluation.semantic import class_iou, mean_iou


@dataclass(frozen=True)
class SegmentOverlap:
    """How the segments of one image's ground truth and prediction overlap.

    Attributes:
        counts: ``[K_gt + 1, K_pred + 1]`` int64 pixel counts of every (ground-truth segment,
            predicted segment) pair, row / column 0 = VOID (:func:`joint_histogram`).
        gt_segment_ids, pred_segment_ids: ``[K_gt]``, ``[K_pred]`` int64 segment ids, in
            ``segments_info`` order (rows / columns 1..K).
        gt_classes, pred_classes: ``[K_gt]``, ``[K_pred]`` int64 contiguous classes.
        gt_crowd: ``[K_gt]`` bool, crowd regions.
        gt_areas: ``[K_gt]`` int64, the JSON's ``area`` (counted in the PNG where it has none).
    """

    counts: np.ndarray
    gt_segment_ids: np.ndarray
    pred_segment_ids: np.ndarray
    gt_classes: np.ndarray
    gt_crowd: np.ndarray
    gt_areas: np.ndarray
    pred_classes: np.ndarray

    def pq_stats(self, num_classes: int) -> PQStats:
        """The image's PQ and semantic statistics (:func:`image_stats`)."""
        return image_stats(
            self.counts, self.gt_classes, self.gt_crowd, self.gt_areas, self.pred_classes, num_classes
        )


def overlap_segments(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Segment],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Segment],
    categories: CategoryMap,
    gt_where: str = "ground truth",
    pred_where: str = "prediction",
) -> SegmentOverlap:
    """The :class:`SegmentOverlap` of one image from its two segment-id maps and ``segments_info`` lists.

    Args:
        gt_ids, pred_ids: ``[H, W]`` uint32 segment ids (0 = VOID), e.g. from
            :func:`~rt_panoptic_ros.image_io.read_panoptic_png`.
        gt_segments, pred_segments: their ``segments_info``.
        categories: the ground truth's categories.
        gt_where, pred_where: name the files in errors.

    Raises:
        DatasetError: sizes differ, a PNG id is not listed (or a listed prediction id has no
            pixel, which panopticapi refuses too), or a category id is unknown.
    """
    if gt_ids.shape != pred_ids.shape:
        raise DatasetError(
            f"{pred_where}: prediction is {pred_ids.shape[0]}x{pred_ids.shape[1]}, its ground truth "
            f"{gt_where} is {gt_ids.shape[0]}x{gt_ids.shape[1]}"
        )
    gt_classes = categories.contiguous([s.category_id for s in gt_segments], f"{gt_where}: segments_info")
    pred_classes = categories.contiguous(
        [s.category_id for s in pred_segments], f"{pred_where}: segments_info"
    )
    gt_slots = segment_slots(gt_ids, [s.id for s in gt_segments], gt_where)
    pred_slots = segment_slots(pred_ids, [s.id for s in pred_segments], pred_where)
    counts = joint_histogram(gt_slots, pred_slots, len(gt_segments), len(pred_segments))
    pred_pixels = counts[:, 1:].sum(0)
    if (pred_pixels == 0).any():
        absent = [s.id for s, n in zip(pred_segments, pred_pixels, strict=True) if n == 0]
        raise DatasetError(
            f"{pred_where}: segment id(s) {absent[:5]} listed in segments_info are not in the PNG"
        )
    gt_areas = np.array([-1 if s.area is None else s.area for s in gt_segments], dtype=np.int64)
    gt_areas = np.where(gt_areas < 0, counts[1:, :].sum(1), gt_areas)  # no 'area' in the JSON: count pixels
    gt_crowd = np.array([s.iscrowd for s in gt_segments], dtype=bool)
    return SegmentOverlap(
        counts, gt_segment_ids=np.array([s.id for s in gt_segments], dtype=np.int64),
        pred_segment_ids=np.array([s.id for s in pred_segments], dtype=np.int64),
        gt_classes=gt_classes, gt_crowd=gt_crowd, gt_areas=gt_areas, pred_classes=pred_classes,
    )  # fmt: skip


def compare_panoptic(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Segment],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Segment],
    categories: CategoryMap,
    gt_where: str = "ground truth",
    pred_where: str = "prediction",
) -> PQStats:
    """Statistics of one image (arguments and errors as :func:`overlap_segments`)."""
    overlap = overlap_segments(gt_ids, gt_segments, pred_ids, pred_segments, categories, gt_where, pred_where)
    return overlap.pq_stats(len(categories))


class PanopticEvaluator:
    """Accumulates PQ and mIoU statistics image by image.

    >>> evaluator = PanopticEvaluator(categories)  # doctest: +SKIP
    >>> evaluator.process(gt_ids, gt_segments, pred_ids, pred_segments)  # doctest: +SKIP
    >>> evaluator.evaluate()["All"]["pq"]  # doctest: +SKIP
    """

    def __init__(self, categories: Sequence[Category] | CategoryMap):
        self.categories = categories if isinstance(categories, CategoryMap) else CategoryMap(categories)
        self.reset()

    def reset(self) -> None:
        self.stats = PQStats.zeros(len(self.categories))
        self.num_images = 0

    def process(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Segment],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Segment],
        gt_where: str = "ground truth",
        pred_where: str = "prediction",
    ) -> None:
        """Add one image (arguments as :func:`compare_panoptic`)."""
        self.add(
            compare_panoptic(
                gt_ids, gt_segments, pred_ids, pred_segments, self.categories, gt_where, pred_where
            )
        )

    def add(self, stats: PQStats) -> None:
        """Add the statistics of one image computed elsewhere (another process)."""
        self.stats += stats
        self.num_images += 1

    def evaluate(self) -> dict[str, Any]:
        """Results in panopticapi's structure, plus the semantic scores.

        ``{"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category_id:
        {"pq", "sq", "rq"}}, "semantic": {"miou", "n", "per_class": {category_id: iou or
        None}}, "images": N}``; scores are fractions (panopticapi's scale, not percent).
        """
        isthing = self.categories.isthing
        results: dict[str, Any] = {}
        for name, select in (("All", np.ones_like(isthing)), ("Things", isthing), ("Stuff", ~isthing)):
            results[name], per_class, _ = pq_average(self.stats, select)
        ids = [int(c) for c in self.categories.category_ids]
        results["per_class"] = {
            cid: {"pq": float(pq), "sq": float(sq), "rq": float(rq)}
            for cid, (pq, sq, rq) in zip(ids, per_class, strict=True)
        }
        iou = class_iou(self.stats.confusion)
        miou, n = mean_iou(self.stats.confusion)
        results["semantic"] = {
            "miou": miou,
            "n": n,
            "per_class": {cid: None if np.isnan(v) else float(v) for cid, v in zip(ids, iou, strict=True)},
        }
        results["images"] = self.num_images
        return results


def format_table(results: dict[str, Any], categories: CategoryMap) -> str:
    """A readable table of :meth:`PanopticEvaluator.evaluate`'s results, in percent."""
    width = max(14, *(len(c.name) for c in categories.categories)) + 1
    lines = [f"{'category':<{width}}|{'PQ':>7}{'SQ':>7}{'RQ':>7}{'IoU':>7}  kind"]
    for category in categories.categories:
        row = results["per_class"][category.id]
        iou = results["semantic"]["per_class"][category.id]
        iou_text = f"{100 * iou:7.1f}" if iou is not None else f"{'-':>7}"
        lines.append(
            f"{category.name:<{width}}|{100 * row['pq']:7.1f}{100 * row['sq']:7.1f}{100 * row['rq']:7.1f}"
            f"{iou_text}  {'thing' if category.isthing else 'stuff'}"
        )
    lines.append("-" * (width + 35))
    lines.append(f"{'':<{width}}|{'PQ':>7}{'SQ':>7}{'RQ':>7}{'N':>7}")
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(
            f"{name:<{width}}|{100 * r['pq']:7.1f}{100 * r['sq']:7.1f}{100 * r['rq']:7.1f}{r['n']:7d}"
        )
    semantic = results["semantic"]
    lines.append(f"{'mIoU':<{width}}|{100 * semantic['miou']:7.1f}{'':14}{semantic['n']:7d}")
    lines.append(f"{results['images']} images")
    return "\n".join(lines)

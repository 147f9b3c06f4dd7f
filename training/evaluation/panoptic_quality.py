"""Panoptic quality (Kirillov et al., "Panoptic Segmentation", CVPR 2019; the paper's Eq. 20)
with exactly the semantics of panopticapi's ``pq_compute``, vectorised over segments.

Per image, with segments of ground truth ``g`` and prediction ``p`` of the same category:

- ``IoU(p, g) = |p ∩ g| / (|p| + |g| − |p ∩ g| − |p ∩ VOID|)``: prediction pixels on VOID
  count neither for nor against it; ``|g|`` is the ground truth's ``area`` from its JSON when
  it gives one (panopticapi reads it there), ``|p|`` is counted in the PNG;
- a pair matches when ``IoU > 0.5`` (strictly), which makes matches unique; crowd regions
  (``iscrowd = 1``) never match;
- unmatched non-crowd ground truth: false negatives; unmatched predictions: false positives,
  unless more than half of their pixels lie on VOID plus the crowd region of their category
  (panopticapi takes the *last* crowd segment of that category in ``segments_info`` order;
  so do we);
- ``PQ = Σ IoU / (TP + FP/2 + FN/2)``, ``SQ = Σ IoU / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``
  per category, averaged over the categories with ``TP + FP + FN > 0``.

One image costs one ``bincount`` over its pixels (:func:`joint_histogram` of ground-truth and
predicted segments) plus work on ``[K_gt, K_pred]`` matrices; no per-pixel or per-pair Python.
The same histogram gives the semantic confusion matrix for mIoU (``semantic.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PQStats:
    """Sufficient statistics of PQ and mIoU over any number of images, per contiguous class.

    Attributes:
        tp, fp, fn: ``[C]`` int64 counts.
        iou: ``[C]`` float64, sum of the IoUs of the true positives.
        confusion: ``[C + 1, C + 1]`` int64 pixel counts, row = ground-truth class, column =
            predicted class, index ``C`` = VOID (unlabelled ground truth, unassigned prediction).
    """

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray
    confusion: np.ndarray

    @classmethod
    def zeros(cls, num_classes: int) -> PQStats:
        counts = np.zeros(num_classes, np.int64)
        return cls(
            tp=counts.copy(), fp=counts.copy(), fn=counts.copy(), iou=np.zeros(num_classes, np.float64),
            confusion=np.zeros((num_classes + 1, num_classes + 1), np.int64),
        )  # fmt: skip

    def __iadd__(self, other: PQStats) -> PQStats:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        self.confusion += other.confusion
        return self


def joint_histogram(gt_slots: np.ndarray, pred_slots: np.ndarray, num_gt: int, num_pred: int) -> np.ndarray:
    """Pixel counts of every (ground-truth segment, predicted segment) pair of one image.

    Args:
        gt_slots, pred_slots: ``[H, W]`` int32 slot maps, 0 = VOID, ``k + 1`` = segment ``k``
            (:func:`~rt_panoptic_ros.training.data.panoptic_format.segment_slots`).
        num_gt, num_pred: K_gt, K_pred.

    Returns:
        ``[K_gt + 1, K_pred + 1]`` int64; row / column 0 is VOID.
    """
    joint = gt_slots.astype(np.intp)
    joint *= num_pred + 1
    joint += pred_slots
    return np.bincount(joint.ravel(), minlength=(num_gt + 1) * (num_pred + 1)).reshape(
        num_gt + 1, num_pred + 1
    )


def image_stats(
    counts: np.ndarray,
    gt_classes: np.ndarray,
    gt_crowd: np.ndarray,
    gt_areas: np.ndarray,
    pred_classes: np.ndarray,
    num_classes: int,
) -> PQStats:
    """PQ and semantic statistics of one image from its :func:`joint_histogram`.

    Args:
        counts: ``[K_gt + 1, K_pred + 1]`` pixel counts, row / column 0 = VOID.
        gt_classes: ``[K_gt]`` int64 contiguous class of each ground-truth segment.
        gt_crowd: ``[K_gt]`` bool, crowd regions.
        gt_areas: ``[K_gt]`` int64 areas used in the IoU's union (see the module docstring).
        pred_classes: ``[K_pred]`` int64 contiguous class of each predicted segment.
        num_classes: C.
    """
    num_gt, num_pred = len(gt_classes), len(pred_classes)
    inter = counts[1:, 1:]  # [K_gt, K_pred] |g ∩ p|
    pred_on_void = counts[0, 1:]  # [K_pred] |p ∩ VOID|
    pred_areas = counts[:, 1:].sum(0)  # [K_pred] |p|

    union = pred_areas[None, :] + gt_areas[:, None] - inter - pred_on_void[None, :]  # [K_gt, K_pred]
    candidate = (gt_classes[:, None] == pred_classes[None, :]) & ~gt_crowd[:, None] & (inter > 0)
    iou = np.zeros(inter.shape, np.float64)
    np.divide(inter, union, out=iou, where=candidate & (union > 0))
    matched = candidate & (iou > 0.5)  # IoU > 0.5 makes every match unique (Kirillov et al., Thm. 1)
    gt_matched, pred_matched = matched.any(1), matched.any(0)

    stats = PQStats.zeros(num_classes)
    stats.tp = np.bincount(gt_classes[gt_matched], minlength=num_classes)
    stats.iou = np.bincount(gt_classes, weights=np.where(matched, iou, 0.0).sum(1), minlength=num_classes)
    stats.fn = np.bincount(gt_classes[~gt_matched & ~gt_crowd], minlength=num_classes)

    # The crowd region of each class: the last crowd segment in order, as panopticapi's dict does.
    crowd_of_class = np.full(num_classes, -1, np.int64)
    crowd = np.flatnonzero(gt_crowd)
    np.maximum.at(crowd_of_class, gt_classes[crowd], crowd)
    crowd_seg = crowd_of_class[pred_classes]  # [K_pred], -1 = no crowd region of that class
    on_crowd = np.where(crowd_seg >= 0, inter[crowd_seg.clip(0), np.arange(num_pred)], 0) if num_gt else 0
    ignored = 2 * (pred_on_void + on_crowd) > pred_areas  # "more than half on VOID / crowd", in integers
    stats.fp = np.bincount(pred_classes[~pred_matched & ~ignored], minlength=num_classes)

    # Semantic confusion: the same histogram, summed over the segments of each class pair.
    gt_sem = np.concatenate([[num_classes], gt_classes])  # row 0 (VOID) -> index C
    pred_sem = np.concatenate([[num_classes], pred_classes])
    cells = (gt_sem[:, None] * (num_classes + 1) + pred_sem[None, :]).ravel()
    stats.confusion = np.bincount(cells, weights=counts.ravel(), minlength=(num_classes + 1) ** 2)
    stats.confusion = stats.confusion.round().astype(np.int64).reshape(num_classes + 1, num_classes + 1)
    return stats


def pq_average(stats: PQStats, select: np.ndarray) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Average PQ, SQ, RQ over the selected classes that occur (panopticapi's ``pq_average``).

    Args:
        stats: accumulated statistics.
        select: ``[C]`` bool, the classes of this group (all, things or stuff).

    Returns:
        ``{"pq", "sq", "rq", "n"}`` (all 0.0 and ``n = 0`` when no selected class occurs, where
        panopticapi would divide by zero), and ``[C, 3]`` float64 per-class PQ, SQ, RQ (0 for a
        class that does not occur), and ``[C]`` bool, whether each class occurs.
    """
    tp, fp, fn, iou = stats.tp.astype(np.float64), stats.fp, stats.fn, stats.iou
    occurs = (stats.tp + fp + fn) > 0
    denominator = np.where(occurs, tp + 0.5 * fp + 0.5 * fn, 1.0)
    per_class = np.zeros((len(tp), 3), np.float64)
    per_class[:, 0] = np.where(occurs, iou / denominator, 0.0)
    per_class[:, 1] = np.where(stats.tp > 0, iou / np.maximum(tp, 1.0), 0.0)
    per_class[:, 2] = np.where(occurs, tp / denominator, 0.0)
    counted = select & occurs
    n = int(counted.sum())
    mean = per_class[counted].sum(0) / n if n else np.zeros(3)
    return {"pq": float(mean[0]), "sq": float(mean[1]), "rq": float(mean[2]), "n": n}, per_class, occurs

"""Semantic segmentation IoU from a pixel confusion matrix (Cityscapes' pixel-level convention).

Ground-truth VOID pixels are ignored. A predicted VOID pixel (a panoptic prediction leaves
pixels unassigned) on a labelled pixel is a false negative of the ground-truth class, as
Cityscapes counts predictions of its ignored labels. mIoU averages over the classes with
``TP + FP + FN > 0``, as Cityscapes' ``nanmean`` does.
"""

from __future__ import annotations

import numpy as np


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU.

    Args:
        confusion: ``[C + 1, C + 1]`` pixel counts, row = ground truth, column = prediction,
            index ``C`` = VOID.

    Returns:
        ``[C]`` float64 IoU ``TP / (TP + FP + FN)``, NaN for a class absent from both.
    """
    num_classes = confusion.shape[0] - 1
    tp = np.diag(confusion)[:num_classes].astype(np.float64)
    gt_pixels = confusion[:num_classes, :].sum(1)  # includes predicted VOID: false negatives
    pred_pixels = confusion[:num_classes, :num_classes].sum(0)  # excludes ground-truth VOID
    union = gt_pixels + pred_pixels - tp
    iou = np.full(num_classes, np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    return iou


def mean_iou(confusion: np.ndarray) -> tuple[float, int]:
    """``(mIoU, number of classes averaged)``; ``(0.0, 0)`` when no class occurs."""
    iou = class_iou(confusion)
    valid = ~np.isnan(iou)
    return (float(iou[valid].mean()) if valid.any() else 0.0), int(valid.sum())

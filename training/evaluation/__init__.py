"""Evaluation: panoptic quality with panopticapi's semantics, and semantic mIoU.

- ``panoptic_quality.py``: per-image statistics (vectorised) and their averages;
- ``semantic.py``: IoU from a pixel confusion matrix;
- ``evaluator.py``: :class:`PanopticEvaluator` (``reset`` / ``process`` / ``evaluate``);
- ``video_quality.py``: STQ / AQ / SQ and identity counts over videos,
  :class:`VideoQualityEvaluator`.

Files on disk are scored by :mod:`.files` (for ``rt-panoptic-eval``, ``training/evaluate.py``).
"""

from rt_panoptic_ros.training.evaluation.evaluator import PanopticEvaluator, compare_panoptic, format_table
from rt_panoptic_ros.training.evaluation.panoptic_quality import (
    PQStats,
    image_stats,
    joint_histogram,
    pq_average,
)
from rt_panoptic_ros.training.evaluation.semantic import class_iou, mean_iou
from rt_panoptic_ros.training.evaluation.video_quality import VideoQualityEvaluator, format_video_table

__all__ = [
    "PQStats",
    "PanopticEvaluator",
    "VideoQualityEvaluator",
    "class_iou",
    "compare_panoptic",
    "format_table",
    "format_video_table",
    "image_stats",
    "joint_histogram",
    "mean_iou",
    "pq_average",
]

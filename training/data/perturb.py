"""Simulated predictions: a ground-truth panoptic map spoiled the ways a network spoils it.

For testing and benchmarking evaluators on files in the COCO panoptic format (the synthetic
dataset's ground truth in, a prediction PNG and ``segments_info`` out). Each ground-truth
segment is, at random, kept, shifted (by up to about half its size, so IoUs straddle the
0.5 matching threshold: near misses both ways), eroded or dilated, relabelled, or missed;
spurious segments are added, some of them on VOID or on a crowd region (which the evaluator
must then ignore); some pixels are left VOID. Prediction ids are random 24-bit colours, as
COCO's are, so nothing may rely on ground-truth and prediction ids agreeing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rt_panoptic_ros.image_io import read_panoptic_png, write_panoptic_png
from rt_panoptic_ros.training.data.synthetic import write_dataset


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by ``(dy, dx)`` pixels; what leaves the image is lost."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


def simulate_prediction(
    gt_ids: np.ndarray,
    gt_segments: Sequence[dict[str, Any]],
    category_ids: Sequence[int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A plausible, imperfect prediction for one ground-truth image.

    Args:
        gt_ids: ``[H, W]`` uint32 ground-truth segment ids (0 = VOID).
        gt_segments: its ``segments_info`` (``id``, ``category_id``, ``iscrowd``, ``bbox``).
        category_ids: all category ids (relabelled and spurious segments draw from them).
        rng: all randomness.

    Returns:
        ``pred_ids`` ``[H, W]`` uint32 (0 = VOID) and its ``segments_info`` (``id``,
        ``category_id``), one entry per id present in ``pred_ids``.
    """
    h, w = gt_ids.shape
    canvas = np.zeros((h, w), np.int32)  # index into `labels` + 1, 0 = VOID
    labels: list[int] = []  # category of each painted segment

    def paint(mask: np.ndarray, category: int) -> None:
        labels.append(int(category))
        canvas[mask] = len(labels)

    kernel = np.ones((5, 5), np.uint8)
    for k in rng.permutation(len(gt_segments)):
        seg = gt_segments[k]
        mask = gt_ids == seg["id"]
        category = seg["category_id"]
        action = rng.random()
        if action < 0.1:
            continue  # missed: a false negative
        if action < 0.45:  # shifted by up to ~half its size: IoU spread around 0.5
            bw, bh = seg["bbox"][2], seg["bbox"][3]
            mask = _shift(mask, int(rng.uniform(-0.35, 0.35) * bh), int(rng.uniform(-0.45, 0.45) * bw))
        elif action < 0.6:
            op = cv2.erode if rng.random() < 0.5 else cv2.dilate
            mask = op(mask.astype(np.uint8), kernel, iterations=int(rng.integers(1, 4))).astype(bool)
        elif action < 0.7:
            category = int(rng.choice(category_ids))  # relabelled
        if seg.get("iscrowd") and rng.random() < 0.7:
            # A crowd predicted as a few instances: split at a random column.
            xs = np.flatnonzero(mask.any(0))
            if len(xs) > 1:
                cut = int(rng.integers(xs[0], xs[-1] + 1))
                left = mask.copy()
                left[:, cut:] = False
                paint(left, category)
                mask = mask & ~left
        paint(mask, category)
    # Spurious segments, some on VOID / crowd pixels: ellipses of random size and class.
    void_or_crowd = np.flatnonzero(
        (gt_ids == 0) | np.isin(gt_ids, _crowd_ids(gt_segments))
    )  # flat pixel indices
    for _ in range(rng.integers(1, 6)):
        if len(void_or_crowd) and rng.random() < 0.5:
            cy, cx = divmod(int(rng.choice(void_or_crowd)), w)
        else:
            cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        mask = np.zeros((h, w), np.uint8)
        axes = (int(rng.integers(2, max(3, w // 12))), int(rng.integers(2, max(3, h // 12))))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        crowd_category = _category_at(gt_segments, int(gt_ids[cy, cx]))
        paint(
            mask.astype(bool), crowd_category if crowd_category is not None else int(rng.choice(category_ids))
        )
    # VOID holes (a decoder leaves low-confidence pixels unassigned).
    for _ in range(rng.integers(0, 4)):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        canvas[y0 : y0 + int(rng.integers(1, h // 6 + 2)), x0 : x0 + int(rng.integers(1, w // 6 + 2))] = 0

    present = np.flatnonzero(np.bincount(canvas.ravel(), minlength=len(labels) + 1)[1:]) + 1
    new_ids = rng.choice(256**3 - 1, size=len(present), replace=False) + 1  # distinct, never 0
    lut = np.zeros(len(labels) + 1, np.uint32)
    lut[present] = new_ids
    segments = [{"id": int(i), "category_id": labels[p - 1]} for i, p in zip(new_ids, present, strict=True)]
    return lut[canvas], segments


def _crowd_ids(segments: Sequence[dict[str, Any]]) -> list[int]:
    return [s["id"] for s in segments if s.get("iscrowd")]


def _category_at(segments: Sequence[dict[str, Any]], segment_id: int) -> int | None:
    """The category of a crowd segment ``segment_id`` (a spurious prediction of the same class
    lying on a crowd region is what the evaluator must ignore), else ``None``."""
    for s in segments:
        if s["id"] == segment_id and s.get("iscrowd"):
            return int(s["category_id"])
    return None


def write_prediction_pairs(
    root: Path, num: int, height: int, width: int, gt_seed: int = 0, pred_seed: int = 1
) -> tuple[Path, Path, Path, Path]:
    """A synthetic ground truth and one simulated prediction per image, both on disk.

    Returns:
        ``(gt_json, gt_dir, pred_json, pred_dir)``, as ``rt-panoptic-eval`` takes them.
    """
    gt_json = write_dataset(root / "gt", num=num, seed=gt_seed, height=height, width=width, progress=False)
    gt = json.loads(gt_json.read_text())
    category_ids = [c["id"] for c in gt["categories"]]
    (root / "pred").mkdir()
    rng = np.random.default_rng(pred_seed)
    annotations = []
    for ann in gt["annotations"]:
        ids = read_panoptic_png(root / "gt" / "panoptic" / ann["file_name"])
        pred, segments = simulate_prediction(ids, ann["segments_info"], category_ids, rng)
        write_panoptic_png(root / "pred" / ann["file_name"], pred)
        annotations.append(
            {"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segments}
        )
    (root / "pred.json").write_text(json.dumps({"annotations": annotations}))
    return gt_json, root / "gt" / "panoptic", root / "pred.json", root / "pred"

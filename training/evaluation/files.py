"""Score panoptic predictions on disk: a ground-truth and a prediction folder, each a JSON plus
PNGs (PQ, SQ, RQ and mIoU; for videos also STQ, AQ, SQ and identity counts), for
``rt-panoptic-eval`` (``training/evaluate.py``), benchmarks and tests.

Ground truth and predictions are in the COCO panoptic format (a JSON plus a folder of PNGs),
as panopticapi's ``pq_compute`` and cityscapesscripts' ``evalPanopticSemanticLabeling`` take
them, and with their semantics (``panoptic_quality.py``). Images are matched by ``image_id``
(or its file stem: :func:`match_predictions`, so ``rt-panoptic-infer``'s output scores as it
is); each prediction's PNG is ``pred_dir / annotations[].file_name``. Images are scored in
worker processes, one per CPU core by default, with a progress bar on a terminal.

For videos the ground truth's ``images[]`` carry ``video_id`` and ``frame_index``
(``rt-panoptic-synth --video`` writes them); frames are grouped by video and scored in frame
order, and a predicted segment id names one track throughout its video (``video_quality.py``).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.image_io import read_panoptic_png
from rt_panoptic_ros.training.data.panoptic_format import (
    CategoryMap,
    ImageId,
    PanopticAnnotation,
    PanopticFile,
    VideoId,
    load_panoptic_json,
    video_positions,
)
from rt_panoptic_ros.training.evaluation.evaluator import (
    PanopticEvaluator,
    compare_panoptic,
    overlap_segments,
)
from rt_panoptic_ros.training.evaluation.panoptic_quality import PQStats
from rt_panoptic_ros.training.evaluation.video_quality import (
    FrameStats,
    VideoQualityEvaluator,
    compare_frame,
)


@dataclass(frozen=True)
class _Job:
    """One image to score: both annotations, their PNGs, and how errors name them."""

    gt: PanopticAnnotation
    pred: PanopticAnnotation
    gt_png: Path
    pred_png: Path
    gt_where: str
    pred_where: str


def _score(categories: CategoryMap, job: _Job) -> PQStats:
    """Read one pair of PNGs and compute its statistics (runs in a worker process)."""
    gt_ids = read_panoptic_png(job.gt_png)
    pred_ids = read_panoptic_png(job.pred_png)
    return compare_panoptic(
        gt_ids, job.gt.segments, pred_ids, job.pred.segments, categories, job.gt_where, job.pred_where
    )


def _score_frame(categories: CategoryMap, job: _Job) -> FrameStats:
    """:func:`_score` for a video frame: its tracks too."""
    gt_ids = read_panoptic_png(job.gt_png)
    pred_ids = read_panoptic_png(job.pred_png)
    overlap = overlap_segments(
        gt_ids, job.gt.segments, pred_ids, job.pred.segments, categories, job.gt_where, job.pred_where
    )
    return compare_frame(overlap, categories)


def single_threaded_opencv() -> None:
    """One OpenCV thread per process: images are spread over processes already, and OpenCV's
    own thread pool only adds contention (measured 1.5x slower per image on a busy 2-core box)."""
    cv2.setNumThreads(1)


def default_workers() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def evaluate_files(
    gt_json: str | Path,
    gt_dir: str | Path,
    pred_json: str | Path,
    pred_dir: str | Path,
    workers: int = 0,
    progress: bool | None = None,
    video: bool = False,
) -> tuple[dict[str, Any], CategoryMap]:
    """Score every ground-truth image against its prediction.

    Args:
        gt_json, gt_dir: ground truth (``categories`` come from ``gt_json``).
        pred_json, pred_dir: predictions, one annotation per ground-truth image.
        workers: processes; 0 = one per CPU core; 1 = in this process.
        progress: progress bar on stderr; ``None`` = only on a terminal.
        video: the ground truth's images are video frames (``video_id``, ``frame_index``):
            also score segmentation and tracking (STQ, identity counts).

    Returns:
        :meth:`PanopticEvaluator.evaluate`'s results (with ``video``,
        :meth:`VideoQualityEvaluator.evaluate`'s: the same plus ``"STQ"``, videos in order of
        first appearance in the ground truth) and the category table.

    Raises:
        DatasetError: a missing or malformed file, an image without prediction or a prediction
            without ground truth, an id a PNG holds but its JSON does not list, ...; with
            ``video``, an image without its video position or two images at one position.
    """
    gt, jobs, categories = _open(gt_json, gt_dir, pred_json, pred_dir)
    if not video:
        evaluator = PanopticEvaluator(categories)
        for stats in _scored(functools.partial(_score, categories), jobs, workers, progress):
            evaluator.add(stats)
        return evaluator.evaluate(), categories
    positions = video_positions(gt)  # image id -> (video id, frame index)
    video_order: dict[VideoId, int] = {}
    for video_id, _ in positions.values():
        video_order.setdefault(video_id, len(video_order))
    jobs.sort(key=lambda job: (video_order[positions[job.gt.image_id][0]], positions[job.gt.image_id][1]))
    video_evaluator = VideoQualityEvaluator(categories)
    frames = _scored(functools.partial(_score_frame, categories), jobs, workers, progress)
    for job, stats in zip(jobs, frames, strict=True):
        video_evaluator.add(*positions[job.gt.image_id], stats)
    return video_evaluator.evaluate(), categories


def _open(
    gt_json: str | Path, gt_dir: str | Path, pred_json: str | Path, pred_dir: str | Path
) -> tuple[PanopticFile, list[_Job], CategoryMap]:
    """Both JSONs read and checked, one job per ground-truth image, and the categories."""
    gt = load_panoptic_json(gt_json, ground_truth=True)
    pred = load_panoptic_json(pred_json, ground_truth=False)
    for folder, option in ((Path(gt_dir), "--gt-dir"), (Path(pred_dir), "--pred-dir")):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: {option} is not a folder")
    categories = CategoryMap(gt.categories, source=str(gt.path))
    return gt, list(_jobs(gt, Path(gt_dir), pred, Path(pred_dir), categories)), categories


def _scored(score: Any, jobs: Sequence[_Job], workers: int, progress: bool | None) -> Iterator[Any]:
    """``score`` of every job in order (:func:`_map`), with a progress bar."""
    workers = min(workers or default_workers(), len(jobs))
    bar = tqdm(
        total=len(jobs),
        desc="rt-panoptic-eval",
        unit="image",
        disable=None if progress is None else not progress,
    )
    with bar:
        for stats in _map(score, jobs, workers):
            yield stats
            bar.update()


def match_predictions(gt: PanopticFile, pred: PanopticFile) -> dict[ImageId, int]:
    """Ground-truth image id -> index of its prediction in ``pred.annotations``.

    A prediction's ``image_id`` names a ground-truth image by its id or, failing that, by one
    of two aliases, so that ``rt-panoptic-infer``'s output (image id = image file stem) scores
    as it is: the stem of the image's ``file_name`` (COCO: ``"000000000139"`` for id 139), and
    ``<id>_leftImg8bit`` (Cityscapes: the image file of id ``frankfurt_000000_000294``).

    Raises:
        DatasetError: a prediction names no ground-truth image, or an alias names several, or
            two predictions name the same image.
    """
    ids = {ann.image_id for ann in gt.annotations}
    aliases: dict[str, set[ImageId]] = {}
    for image_id in ids:
        file_name = gt.images.get(image_id, {}).get("file_name")
        names = {f"{image_id}_leftImg8bit"} | (
            {Path(file_name).stem} if isinstance(file_name, str) else set()
        )
        for name in names:
            aliases.setdefault(name, set()).add(image_id)
    matched: dict[ImageId, int] = {}
    for k, ann in enumerate(pred.annotations):
        where = f"{pred.path}: annotations[{k}].image_id: {ann.image_id!r}"
        targets = {ann.image_id} if ann.image_id in ids else aliases.get(str(ann.image_id), set())
        if not targets:
            raise DatasetError(f"{where} is not an image of the ground truth {gt.path}")
        if len(targets) > 1:
            raise DatasetError(
                f"{where} could be any of the ground truth's images {sorted(map(str, targets))}"
            )
        (target,) = targets
        if target in matched:
            raise DatasetError(
                f"{where} predicts image {target!r} again (annotations[{matched[target]}] did)"
            )
        matched[target] = k
    return matched


def _jobs(
    gt: PanopticFile, gt_dir: Path, pred: PanopticFile, pred_dir: Path, categories: CategoryMap
) -> Iterator[_Job]:
    """Pair annotations by image id; check categories before any pixel is read."""
    pred_index = match_predictions(gt, pred)
    for k, gt_ann in enumerate(gt.annotations):
        gt_where = f"{gt.path}: annotations[{k}] (image_id {gt_ann.image_id!r})"
        if gt_ann.image_id not in pred_index:
            raise DatasetError(f"{pred.path}: no prediction for image_id {gt_ann.image_id!r} ({gt_where})")
        j = pred_index[gt_ann.image_id]
        pred_ann = pred.annotations[j]
        pred_where = f"{pred.path}: annotations[{j}] (image_id {pred_ann.image_id!r})"
        categories.contiguous([s.category_id for s in gt_ann.segments], f"{gt_where}.segments_info")
        categories.contiguous([s.category_id for s in pred_ann.segments], f"{pred_where}.segments_info")
        gt_png, pred_png = gt_dir / gt_ann.file_name, pred_dir / pred_ann.file_name
        yield _Job(gt_ann, pred_ann, gt_png, pred_png, f"{gt_png} ({gt_where})", f"{pred_png} ({pred_where})")


def _map(score: Any, jobs: Sequence[_Job], workers: int) -> Iterator[Any]:
    """``score`` over ``jobs`` in order, in ``workers`` processes (1: in this one)."""
    if workers <= 1:
        yield from map(score, jobs)
        return
    executor = ProcessPoolExecutor(
        max_workers=workers, mp_context=_context(), initializer=single_threaded_opencv
    )
    try:
        # Small chunks keep the progress bar moving and the workers evenly loaded.
        yield from executor.map(score, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)  # on an error, drop what is queued


def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from a fresh server process, not from this one.

    A plain fork copies this process's thread pools (OpenCV's, torch's) without their threads,
    and OpenCV then deadlocks in the child (seen in the test suite). The fork server starts
    once per process (about 3 s here, as importing ``rt_panoptic_ros`` imports torch), with this
    module preloaded, and every later pool forks from it in milliseconds. Where there is no fork
    server (Windows), workers are spawned.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context

"""Segmentation and Tracking Quality (STQ) and identity counts over videos in the COCO panoptic format.

STQ is Weber et al., "STEP: Segmenting and Tracking Every Pixel" (2021). A *track* is
the set of pixels, over all frames of one video, that carry one segment id: ground-truth tracks
are the non-crowd segments of thing classes, predicted tracks the predicted segments of thing
classes. The association is class-agnostic: a predicted pixel belongs to the track of its
segment id whatever class that segment has in that frame, and ids are per video (the same id in
two videos is two tracks). With TPA(p, g) = |p ∩ g|, FPA(p, g) = |p \\ g|, FNA(p, g) = |g \\ p|:

- the paper's association IoU: ``IoU_id(p, g) = TPA / (TPA + FPA + FNA)`` over the whole video;
- the paper's association quality of a track and of the set:
  ``AQ(g) = 1/|g| Σ_{p, |p ∩ g| ≠ 0} TPA(p, g) · IoU_id(p, g)``,
  ``AQ = 1/|gt tracks| Σ_g AQ(g)``, averaged over the tracks of all videos together;
- the paper's segmentation quality ``SQ = mIoU``: class-level IoU of the semantic labels (stuff
  and things) over every pixel of every frame, averaged over the classes that occur;
- ``STQ = sqrt(AQ × SQ)``.

Pixels, as the paper's authors' public implementation (DeepLab2's ``STQuality``, read to
understand the conventions; nothing of it is copied) treats them: predicted pixels on a
ground-truth crowd region belong to no predicted track (no penalty for ids in a crowd);
predicted thing pixels on ground-truth VOID or stuff do belong to their track (they are FPA).
SQ ignores ground-truth VOID pixels; one difference from DeepLab2: a prediction's VOID pixel
on a labelled one is a false negative of that class (:mod:`.semantic`, as for mIoU), where
DeepLab2 would also average a zero-IoU "void class" into the mean.

Beside STQ, MOT-style identity counts, from per-frame matches (a ground-truth track and a
predicted one whose IoU *in that frame* is above 0.5, which makes matches unique):

- ``id_switches``: matches of a ground-truth track to another predicted id than at its last
  match (frames without a match in between do not reset it);
- ``id_consistency``: of the consecutive frame pairs in which a ground-truth track is matched
  in both, the fraction in which it keeps its predicted id (``None`` when there is no pair).

Each frame costs one ``bincount`` over its pixels (the joint histogram the PQ evaluator builds
anyway, :func:`~.evaluator.overlap_segments`); a video then keeps only small per-frame
tables (track ids, areas, overlaps), summed with ``bincount`` at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.training.data.panoptic_format import Category, CategoryMap, Segment, VideoId
from rt_panoptic_ros.training.evaluation.evaluator import PanopticEvaluator, SegmentOverlap, overlap_segments
from rt_panoptic_ros.training.evaluation.panoptic_quality import PQStats
from rt_panoptic_ros.training.evaluation.semantic import mean_iou


@dataclass(frozen=True)
class FrameTracks:
    """The tracks present in one frame and how they overlap.

    Attributes:
        gt_ids: ``[G]`` int64 segment ids of the ground truth's non-crowd thing segments present.
        gt_areas: ``[G]`` int64 their pixels.
        pred_ids: ``[P]`` int64 segment ids of the predicted thing segments with pixels off
            ground-truth crowd regions.
        pred_areas: ``[P]`` int64 those pixels.
        overlap: ``[G, P]`` int64 ``|g ∩ p|``.
    """

    gt_ids: np.ndarray
    gt_areas: np.ndarray
    pred_ids: np.ndarray
    pred_areas: np.ndarray
    overlap: np.ndarray


@dataclass(frozen=True)
class FrameStats:
    """What one frame adds: its PQ / semantic statistics and its tracks."""

    panoptic: PQStats
    tracks: FrameTracks


def frame_tracks(overlap: SegmentOverlap, isthing: np.ndarray) -> FrameTracks:
    """The :class:`FrameTracks` of one frame.

    Args:
        overlap: the frame's segment overlap (:func:`~.evaluator.overlap_segments`).
        isthing: ``[C]`` bool, whether each contiguous class is a thing class.
    """
    counts = overlap.counts[:, 1:]  # [K_gt + 1, K_pred], VOID prediction dropped
    gt_track = isthing[overlap.gt_classes] & ~overlap.gt_crowd  # [K_gt]
    off_crowd = np.concatenate([[True], ~overlap.gt_crowd])  # [K_gt + 1]: VOID, stuff, things count
    pred_areas = counts[off_crowd].sum(0)  # [K_pred]
    pred_track = isthing[overlap.pred_classes] & (pred_areas > 0)
    gt_areas = overlap.counts[1:].sum(1)  # [K_gt] every pixel of g, whatever is predicted there
    gt_track &= gt_areas > 0  # listed but not in the PNG: not in this frame
    return FrameTracks(
        gt_ids=overlap.gt_segment_ids[gt_track], gt_areas=gt_areas[gt_track],
        pred_ids=overlap.pred_segment_ids[pred_track], pred_areas=pred_areas[pred_track],
        overlap=counts[1:][gt_track][:, pred_track],
    )  # fmt: skip


def compare_frame(overlap: SegmentOverlap, categories: CategoryMap) -> FrameStats:
    """Statistics of one frame from its :func:`~.evaluator.overlap_segments`."""
    return FrameStats(overlap.pq_stats(len(categories)), frame_tracks(overlap, categories.isthing))


@dataclass
class _Video:
    """One video's running statistics; frames arrive in order."""

    num_classes: int
    frames: int = 0
    last_frame_index: int | None = None
    confusion: np.ndarray = field(init=False)
    per_frame: list[FrameTracks] = field(default_factory=list)
    last_match: dict[int, int] = field(default_factory=dict)  # gt id -> predicted id at its last match
    previous_frame: dict[int, int] = field(default_factory=dict)  # the previous frame's matches
    id_switches: int = 0
    kept_pairs: int = 0
    matched_pairs: int = 0

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes + 1, self.num_classes + 1), np.int64)

    def add(self, stats: FrameStats) -> None:
        self.frames += 1
        self.confusion += stats.panoptic.confusion
        tracks = stats.tracks
        self.per_frame.append(tracks)
        union = tracks.gt_areas[:, None] + tracks.pred_areas[None, :] - tracks.overlap  # [G, P]
        rows, cols = np.nonzero(2 * tracks.overlap > union)  # IoU > 0.5, in integers
        matches = dict(zip(tracks.gt_ids[rows].tolist(), tracks.pred_ids[cols].tolist(), strict=True))
        for gt_id, pred_id in matches.items():  # a handful per frame
            self.id_switches += self.last_match.get(gt_id, pred_id) != pred_id
            if gt_id in self.previous_frame:
                self.matched_pairs += 1
                self.kept_pairs += self.previous_frame[gt_id] == pred_id
        self.last_match.update(matches)
        self.previous_frame = matches

    def association(self) -> tuple[float, int]:
        """``(Σ_g AQ(g), number of ground-truth tracks)`` of this video."""
        frames = self.per_frame
        gt_track, gt_index, gt_size = _sum_by_id([f.gt_ids for f in frames], [f.gt_areas for f in frames])
        if not len(gt_track):
            return 0.0, 0
        pred_track, pred_index, pred_size = _sum_by_id(
            [f.pred_ids for f in frames], [f.pred_areas for f in frames]
        )
        # Every frame's non-zero overlaps as (gt track, predicted track, pixels), summed per pair.
        pair_keys, pair_pixels, gt_start, pred_start = [], [], 0, 0
        for tracks in frames:
            rows, cols = np.nonzero(tracks.overlap)
            pair_keys.append(gt_index[gt_start + rows] * len(pred_track) + pred_index[pred_start + cols])
            pair_pixels.append(tracks.overlap[rows, cols])
            gt_start, pred_start = gt_start + len(tracks.gt_ids), pred_start + len(tracks.pred_ids)
        keys, key_index = np.unique(np.concatenate(pair_keys), return_inverse=True)
        tpa = np.bincount(key_index, weights=np.concatenate(pair_pixels))  # [pairs] TPA(p, g)
        g, p = keys // len(pred_track), keys % len(pred_track)
        iou_id = tpa / (gt_size[g] + pred_size[p] - tpa)  # TPA / (TPA + FPA + FNA)
        per_track = np.bincount(g, weights=tpa * iou_id, minlength=len(gt_track)) / gt_size  # AQ(g)
        return float(per_track.sum()), len(gt_track)


def _sum_by_id(ids: list[np.ndarray], areas: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame ``ids`` and ``areas`` summed per id: ``[T]`` sorted ids, ``[N]`` the index of
    each input entry into them (frames concatenated), ``[T]`` float64 total areas (|g| or |p|)."""
    unique, index = np.unique(np.concatenate(ids), return_inverse=True)
    return unique, index, np.bincount(index, weights=np.concatenate(areas), minlength=len(unique))


class VideoQualityEvaluator:
    """Accumulates STQ, identity and PQ statistics frame by frame.

    >>> evaluator = VideoQualityEvaluator(categories)  # doctest: +SKIP
    >>> for frame_index, (gt_ids, gt_segments, pred_ids, pred_segments) in enumerate(video):  # doctest: +SKIP
    ...     evaluator.process("video_0", frame_index, gt_ids, gt_segments, pred_ids, pred_segments)
    >>> evaluator.evaluate()["STQ"]["stq"]  # doctest: +SKIP
    """

    def __init__(self, categories: Sequence[Category] | CategoryMap):
        self.categories = categories if isinstance(categories, CategoryMap) else CategoryMap(categories)
        self.reset()

    def reset(self) -> None:
        self.panoptic = PanopticEvaluator(self.categories)
        self.videos: dict[VideoId, _Video] = {}

    def process(
        self,
        video_id: VideoId,
        frame_index: int,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Segment],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Segment],
        gt_where: str = "ground truth",
        pred_where: str = "prediction",
    ) -> None:
        """Add one frame (arguments as :meth:`PanopticEvaluator.process`); a video's frames in order."""
        overlap = overlap_segments(
            gt_ids, gt_segments, pred_ids, pred_segments, self.categories, gt_where, pred_where
        )
        self.add(video_id, frame_index, compare_frame(overlap, self.categories))

    def add(self, video_id: VideoId, frame_index: int, stats: FrameStats) -> None:
        """Add the statistics of one frame computed elsewhere (another process).

        Raises:
            DatasetError: ``frame_index`` does not come after the video's previous frame.
        """
        video = self.videos.setdefault(video_id, _Video(len(self.categories)))
        if video.last_frame_index is not None and frame_index <= video.last_frame_index:
            raise DatasetError(
                f"video {video_id!r}: frame_index {frame_index} after frame_index "
                f"{video.last_frame_index}; frames must come in increasing order"
            )
        video.last_frame_index = frame_index
        video.add(stats)
        self.panoptic.add(stats.panoptic)

    def evaluate(self) -> dict[str, Any]:
        """:meth:`PanopticEvaluator.evaluate`'s results over all frames, plus ``"STQ"``.

        ``"STQ"``: ``{"stq", "aq", "sq", "id_switches", "id_consistency", "consistent_pairs",
        "matched_pairs", "tracks", "videos", "frames", "per_video": {video_id: {the same less
        "videos" and "per_video"}}}``; scores are fractions. With no ground-truth track, AQ and
        STQ are 0.0 with ``tracks = 0``; ``id_consistency`` is ``None`` without a matched pair.
        """
        results = self.panoptic.evaluate()
        videos = self.videos.values()
        associations = [video.association() for video in videos]  # (Σ_g AQ(g), tracks) per video
        per_video = {
            video_id: _summary(aq_sum, tracks, video.confusion, [video])
            for (video_id, video), (aq_sum, tracks) in zip(self.videos.items(), associations, strict=True)
        }
        aq_sum, tracks = sum(a for a, _ in associations), sum(n for _, n in associations)
        results["STQ"] = {
            **_summary(aq_sum, tracks, self.panoptic.stats.confusion, videos),
            "videos": len(self.videos),
            "per_video": per_video,
        }
        return results


def _summary(aq_sum: float, tracks: int, confusion: np.ndarray, videos: Iterable[_Video]) -> dict[str, Any]:
    """STQ, AQ, SQ and the identity counts of one video or of several.

    Args:
        aq_sum, tracks: Σ_g AQ(g) and the number of ground-truth tracks of ``videos``.
        confusion: ``[C + 1, C + 1]`` semantic confusion of their frames.
    """
    aq = aq_sum / tracks if tracks else 0.0
    sq, _ = mean_iou(confusion)
    kept = sum(v.kept_pairs for v in videos)
    matched = sum(v.matched_pairs for v in videos)
    return {
        "stq": math.sqrt(aq * sq), "aq": aq, "sq": sq, "id_switches": sum(v.id_switches for v in videos),
        "id_consistency": kept / matched if matched else None, "consistent_pairs": kept,
        "matched_pairs": matched, "tracks": tracks, "frames": sum(v.frames for v in videos),
    }  # fmt: skip


def format_video_table(stq: dict[str, Any]) -> str:
    """A readable table of the ``"STQ"`` results, per video and over all, in percent."""
    names = [str(v) for v in stq["per_video"]]
    width = max(8, *(len(n) for n in names)) + 1
    columns = f"{'STQ':>7}{'AQ':>7}{'SQ':>7}{'tracks':>8}{'frames':>8}{'id sw.':>8}{'id cons.':>10}"
    header = f"{'video':<{width}}|{columns}"
    lines = [header]
    rows = [*zip(names, stq["per_video"].values(), strict=True), ("all", stq)]
    for k, (name, row) in enumerate(rows):
        if k == len(rows) - 1:
            lines.append("-" * len(header))
        consistency = "-" if row["id_consistency"] is None else f"{100 * row['id_consistency']:.1f}"
        lines.append(
            f"{name:<{width}}|{100 * row['stq']:7.1f}{100 * row['aq']:7.1f}{100 * row['sq']:7.1f}"
            f"{row['tracks']:8d}{row['frames']:8d}{row['id_switches']:8d}{consistency:>10}"
        )
    lines.append(f"{stq['videos']} videos")
    return "\n".join(lines)

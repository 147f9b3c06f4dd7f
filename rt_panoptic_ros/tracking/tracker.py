"""Frame-to-frame association of panoptic instances: every frame's ids 1..K become track ids.

Each :meth:`PanopticTracker.update` does, in order:

1. **Overlap, one pass.** The previous frame's instance image (as decoded, ids 1..K') and
   this frame's (ids 1..K) are combined into one index ``prev * (K + 1) + cur`` per pixel and
   counted with ``torch.bincount``: the ``[K' + 1, K + 1]`` joint histogram holds every
   intersection, and its row / column sums every area, so all mask IoUs come from one pass
   over the image and one small copy to the host. The pass runs on every ``iou_stride``-th
   row and column, by default the stride that leaves about :data:`SAMPLED_PIXELS` of the
   image (1 up to 512x256, 2 at 1024x512, 4 at 2048x1024): the cost stays the same at every
   resolution, and an object of 16x16 pixels still has 16 samples; IoUs of objects that
   size or larger change by well under the threshold's margin, smaller ones go by box.
2. **Cost.** A track seen in the previous frame whose mask has sampled pixels is scored by
   mask IoU. Any other live track (missed for one frame or more, or too small to sample)
   is scored by the IoU of its constant-velocity predicted box with the segment's box: its
   last mask is stale, the predicted box is not. Track and segment must have the same
   ``category_id``; other pairs score 0.
3. **Assignment.** ``scipy.optimize.linear_sum_assignment`` on ``1 - IoU``; pairs with IoU
   below ``iou_threshold`` are rejected. Matched segments take their track's id, the others
   start new tracks. A track unseen for more than ``max_age`` frames is dropped.

Ids are 1..:data:`MAX_TRACK_ID` (0 = none); new ids count up, wrap around after the maximum
and skip ids of live tracks, so no id is reused while its track lives.

A stream that goes back in time (a bag replayed from its start, a camera restarted with an
older clock) is a new sequence: :meth:`PanopticTracker.update` given a ``stamp`` older than
the last one forgets every track first, so no object of the old run lends its id to one of
the new run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from rt_panoptic_ros.panoptic.result import PanopticResult

#: Pixels the overlap pass counts by default (step 1 of the module doc): 512x256.
SAMPLED_PIXELS = 512 * 256
MAX_TRACK_ID = 65535
"""Largest track id: ids fit 16 unsigned bits (a ``mono16`` image or a PNG channel pair)."""


@dataclass(frozen=True)
class TrackingSettings:
    """How a stream's instances are tracked (the node's ``tracking.*`` parameters, the bag
    tool's and ``rt-panoptic-infer``'s options).

    Attributes:
        enabled: give instances track ids; off: every frame numbers them 1..K afresh.
        max_age: see :class:`PanopticTracker`.
        iou_threshold: see :class:`PanopticTracker`.

    Raises:
        ValueError: ``max_age`` < 0 or ``iou_threshold`` outside (0, 1], when built, so that
            settings that exist are settings a tracker takes.
    """

    enabled: bool = True
    max_age: int = 30
    iou_threshold: float = 0.3

    def __post_init__(self) -> None:
        _check_tuning(self.max_age, self.iou_threshold)

    def tracker(self) -> PanopticTracker:
        """A new tracker with these settings."""
        return PanopticTracker(max_age=self.max_age, iou_threshold=self.iou_threshold)


def _check_tuning(max_age: int | None, iou_threshold: float | None) -> None:
    """Raise ``ValueError`` for ``max_age`` < 0 or ``iou_threshold`` outside (0, 1] (``None``: unchecked)."""
    if max_age is not None and max_age < 0:
        raise ValueError(f"max_age must be >= 0, got {max_age}")
    if iou_threshold is not None and not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")


#: Tracking as the node does it by default (on, ``max_age`` 30, ``iou_threshold`` 0.3).
DEFAULT_TRACKING = TrackingSettings()


@dataclass
class Track:
    """One tracked instance.

    Attributes:
        id: the track id, 1..:data:`MAX_TRACK_ID`.
        category_id: its semantic class id; a track only matches segments of this class.
        box: ``[4]`` float64 ``(x1, y1, x2, y2)`` box when last seen (x2, y2 exclusive).
        velocity: ``[4]`` float64 change of ``box`` per frame, from its last two sightings.
        last_seen: the frame number (count of updates, from 0) it was last matched in.
        hits: in how many frames it was matched.
    """

    id: int
    category_id: int
    box: np.ndarray
    velocity: np.ndarray
    last_seen: int
    hits: int = 1

    def predicted_box(self, frame: int) -> np.ndarray:
        """Its box at ``frame``, moved at constant velocity since it was last seen."""
        return self.box + self.velocity * (frame - self.last_seen)


def sampling_stride(height: int, width: int) -> int:
    """The default ``iou_stride``: about :data:`SAMPLED_PIXELS` samples of an ``height x width`` map."""
    return max(1, round(math.sqrt(height * width / SAMPLED_PIXELS)))


def relabel(instance: Tensor, lookup: np.ndarray) -> Tensor:
    """``lookup[instance]``: an ``[H, W]`` id map through a ``[N]`` table, on the map's device,
    int16 while every value of the table fits (<= 32767), else int32: half the memory of the
    result for the usual ids (a 8000x8000 frame's map: 122 instead of 244 MiB).

    On the CPU with at most 256 entries (frame ids 0..255: ``max_detections`` <= 255, the
    default 100) through OpenCV's ``LUT`` on a uint8 copy of the map: 0.7 ms against 1.4 ms
    for torch's ``index_select`` (and 2.1 ms for ``np.take``) on a 1024x2048 map of 50 objects
    here, one thread. Otherwise ``index_select``.
    """
    dtype = np.int16 if int(lookup.max(initial=0)) <= np.iinfo(np.int16).max else np.int32
    if instance.device.type == "cpu" and len(lookup) <= 256:
        table = np.zeros(256, dtype=dtype)
        table[: len(lookup)] = lookup
        ids = instance.numpy().astype(np.uint8, copy=False)  # exact: every value indexes the table
        return torch.from_numpy(cv2.LUT(ids, table))
    table = torch.from_numpy(lookup.astype(dtype)).to(instance.device)
    return table.index_select(0, instance.reshape(-1).to(torch.int32)).view(instance.shape)


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of ``[N, 4]`` and ``[M, 4]`` xyxy boxes (x2, y2 exclusive) -> ``[N, M]`` float64."""
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # [N,M,2]
    rb = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N,M,2]
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area1 = np.clip(boxes1[:, 2:] - boxes1[:, :2], 0, None).prod(axis=1)
    area2 = np.clip(boxes2[:, 2:] - boxes2[:, :2], 0, None).prod(axis=1)
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class PanopticTracker:
    """Gives the instances of consecutive :class:`PanopticResult` s of one camera stable ids.

    Args:
        max_age: frames a track is kept after it was last seen; a track missed for up to
            ``max_age`` consecutive frames can get its id back.
        iou_threshold: least IoU (mask or predicted box, see the module doc) of a match.
        iou_stride: the mask overlap is counted on every ``iou_stride``-th row and column;
            ``None``: chosen by image size (module doc, step 1).

    Example:
        >>> tracker = PanopticTracker(max_age=30, iou_threshold=0.3)
        >>> tracked = [tracker.update(result) for result in results]  # doctest: +SKIP
    """

    def __init__(self, max_age: int = 30, iou_threshold: float = 0.3, iou_stride: int | None = None) -> None:
        if iou_stride is not None and iou_stride < 1:
            raise ValueError(f"iou_stride must be >= 1, got {iou_stride}")
        self.iou_stride = iou_stride
        self.retune(max_age, iou_threshold)
        self.reset()

    def retune(self, max_age: int | None = None, iou_threshold: float | None = None) -> None:
        """Change ``max_age`` and / or ``iou_threshold`` (``None``: keep); the tracks stay.

        Raises:
            ValueError: ``max_age`` < 0 or ``iou_threshold`` outside (0, 1].
        """
        _check_tuning(max_age, iou_threshold)
        if max_age is not None:
            self.max_age = max_age
        if iou_threshold is not None:
            self.iou_threshold = iou_threshold

    def reset(self) -> None:
        """Forget all tracks (a new sequence); ids start again at 1."""
        # The live tracks, one row each in these arrays, oldest first (no Python object per
        # track on the hot path; :attr:`tracks` builds them when asked).
        self._ids = np.zeros(0, dtype=np.int64)  # [T] track ids
        self._classes = np.zeros(0, dtype=np.int64)  # [T] category ids
        self._boxes = np.zeros((0, 4))  # [T, 4] xyxy when last seen
        self._velocity = np.zeros((0, 4))  # [T, 4] box change per frame
        self._last_seen = np.zeros(0, dtype=np.int64)  # [T] frame numbers
        self._hits = np.zeros(0, dtype=np.int64)  # [T]
        self.frame = -1
        self.last_stamp: int | None = None
        self._next_id = 1
        self._previous: Tensor | None = None  # [h, w] int32 sampled instance ids of the last frame
        self._previous_track = np.zeros(1, dtype=np.int64)  # previous id k -> track id (0 = none)

    @property
    def tracks(self) -> dict[int, Track]:
        """The live tracks by id (built on each call: for inspection, not per frame)."""
        return {
            int(i): Track(int(i), int(c), b.copy(), v.copy(), int(seen), int(hits))
            for i, c, b, v, seen, hits in zip(
                self._ids,
                self._classes,
                self._boxes,
                self._velocity,
                self._last_seen,
                self._hits,
                strict=True,
            )
        }

    def update(self, result: PanopticResult, stamp: int | None = None) -> PanopticResult:
        """Associate ``result``'s instances with the live tracks.

        Args:
            result: one frame, as :func:`rt_panoptic_ros.panoptic.decode` returns it
                (``instance`` pixel k <-> ``InstanceSegment.id`` k), on any device.
            stamp: the frame's time (any integer clock, e.g. nanoseconds); older than the last
                frame's: a new sequence, every track is forgotten first (module doc).

        Returns:
            The same frame with track ids: ``instance`` ``[H, W]`` on the input's device
            (0 = stuff or void, t = the segment with ``id`` t, 1 <= t <= 65535; int16 while
            this frame's ids fit it, int32 when one exceeds 32767), ``segments`` in the input's
            order (decreasing score, so not sorted by id) with ``id`` replaced by the track
            id, ``semantic`` unchanged, ``frame_instance`` the input's own map (what drawing
            indexes by).
        """
        if stamp is not None:
            if self.last_stamp is not None and stamp < self.last_stamp:
                self.reset()
            self.last_stamp = stamp
        self.frame += 1
        instance = result.segment_index
        segments = result.segments
        stride = self.iou_stride or sampling_stride(*instance.shape)
        sampled = instance[::stride, ::stride].to(torch.int32)  # [h, w]
        if result.frame_instance is None:  # the segments' pixel values, as the decoder gave them
            seg_ids = np.array([s.id for s in segments], dtype=np.int64)  # [K]
        else:  # tracked before: its frame map has segments[k - 1] at k
            seg_ids = np.arange(1, len(segments) + 1, dtype=np.int64)
        num_bins = int(seg_ids.max()) + 1 if len(segments) else 1
        boxes = np.array([s.bbox for s in segments], dtype=np.float64).reshape(-1, 4)  # [K, 4]
        classes = np.array([s.category_id for s in segments], dtype=np.int64)  # [K]

        assigned = np.zeros(len(segments), dtype=np.int64)  # track id per segment, 0 = new
        if len(self._ids) and len(segments):
            iou = self._iou(boxes, classes, sampled, seg_ids, num_bins)  # [T, K]
            rows, cols = linear_sum_assignment(1.0 - iou)
            good = iou[rows, cols] >= self.iou_threshold
            rows, cols = rows[good], cols[good]
            gap = (self.frame - self._last_seen[rows])[:, None]
            self._velocity[rows] = (boxes[cols] - self._boxes[rows]) / gap
            self._boxes[rows] = boxes[cols]
            self._last_seen[rows] = self.frame
            self._hits[rows] += 1
            assigned[cols] = self._ids[rows]

        self._keep(self.frame - self._last_seen <= self.max_age)
        new = np.flatnonzero(assigned == 0)
        assigned[new] = self._new_ids(len(new))
        self._ids = np.concatenate((self._ids, assigned[new]))
        self._classes = np.concatenate((self._classes, classes[new]))
        self._boxes = np.concatenate((self._boxes, boxes[new]))
        self._velocity = np.concatenate((self._velocity, np.zeros((len(new), 4))))
        self._last_seen = np.concatenate((self._last_seen, np.full(len(new), self.frame)))
        self._hits = np.concatenate((self._hits, np.ones(len(new), dtype=np.int64)))

        lookup = np.zeros(num_bins, dtype=np.int64)  # frame id k -> track id
        lookup[seg_ids] = assigned
        self._previous, self._previous_track = sampled, lookup
        tracked = relabel(instance, lookup)
        # The constructor, not dataclasses.replace: 4x less time for 50 segments.
        new_segments = [
            type(s)(int(t), s.category_id, s.score, s.bbox, s.area)
            for s, t in zip(segments, assigned, strict=True)
        ]
        return PanopticResult(result.semantic, tracked, new_segments, frame_instance=instance)

    def _keep(self, rows: np.ndarray) -> None:
        """Keep the tracks where ``rows`` (``[T]`` bool) is true, in their order."""
        self._ids, self._classes = self._ids[rows], self._classes[rows]
        self._boxes, self._velocity = self._boxes[rows], self._velocity[rows]
        self._last_seen, self._hits = self._last_seen[rows], self._hits[rows]

    def _iou(
        self, boxes: np.ndarray, classes: np.ndarray, sampled: Tensor, seg_ids: np.ndarray, num_bins: int
    ) -> np.ndarray:
        """``[T, K]`` IoU of each live track with each segment (module doc, step 2), for the
        segments' ``[K, 4]`` boxes and ``[K]`` classes."""
        predicted = self._boxes + self._velocity * (self.frame - self._last_seen)[:, None]  # [T, 4]
        iou = box_iou(predicted, boxes)  # [T, K]

        previous = self._previous
        if previous is not None and previous.shape == sampled.shape:
            if previous.device != sampled.device:
                previous = previous.to(sampled.device)
            prev_bins = len(self._previous_track)
            joint = (previous * num_bins + sampled).reshape(-1)  # [h*w] int32
            hist = torch.bincount(joint, minlength=prev_bins * num_bins)
            hist = hist.view(prev_bins, num_bins).cpu().numpy().astype(np.float64)
            prev_area = hist.sum(axis=1)  # [K'+1]
            cur_area = hist.sum(axis=0)  # [num_bins]
            # rows: live tracks seen in the last frame that own a previous id with sampled pixels
            prev_ids = np.flatnonzero(self._previous_track)
            prev_ids = prev_ids[prev_area[prev_ids] > 0]
            recent = np.flatnonzero(self._last_seen == self.frame - 1)  # [R'] rows
            order = np.argsort(self._ids[recent])
            sorted_ids = self._ids[recent][order]
            owners = self._previous_track[prev_ids]
            at = np.minimum(np.searchsorted(sorted_ids, owners), max(len(sorted_ids) - 1, 0))
            found = sorted_ids[at] == owners if len(sorted_ids) else np.zeros(len(owners), dtype=bool)
            prev_ids, rows = prev_ids[found], recent[order][at[found]]
            inter = hist[prev_ids][:, seg_ids]  # [R, K]
            union = prev_area[prev_ids, None] + cur_area[None, seg_ids] - inter
            iou[rows] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

        iou[self._classes[:, None] != classes[None, :]] = 0.0
        return iou

    def _new_ids(self, count: int) -> np.ndarray:
        """``count`` ids not held by a live track: counting up from the last one given, wrapping
        after 65535, skipping live ids."""
        if len(self._ids) + count > MAX_TRACK_ID:
            raise RuntimeError(f"all {MAX_TRACK_ID} track ids are live; lower max_age")
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        # ``count`` free ids lie among the next count + (live tracks) ids in counting order.
        candidates = (self._next_id - 1 + np.arange(count + len(self._ids))) % MAX_TRACK_ID + 1
        ids = candidates[~np.isin(candidates, self._ids)][:count]
        self._next_id = int(ids[-1]) % MAX_TRACK_ID + 1
        return ids

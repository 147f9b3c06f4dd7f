"""Frames lost between the camera and the node, estimated from gaps in the camera's stamps.

A camera stamps its frames at a steady period; when the node receives stamps ``t, t + 2T``,
the frame at ``t + T`` was published but never arrived (DDS dropped it: a best-effort reader
whose fragments did not fit the transport, a keep-last writer that replaced it before a
reliable reader had it). The node cannot see those frames, but it can count the holes.
Plain code (no rclpy), tested without ROS; the node feeds it from its subscription callback,
before the keep-latest slot, so frames the node itself drops while busy are not counted here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

#: Intervals kept per camera for the period estimate (a few seconds of a 30 Hz camera).
PERIOD_WINDOW = 50
#: Intervals needed before any gap is judged: with fewer the period is a guess.
MIN_INTERVALS = 4
#: A gap of more missing frames than this is a pause of the camera (stopped, triggered,
#: replayed), not transport loss, and is not counted.
MAX_MISSING = 30
#: Cameras (frame_ids) tracked at once; more are forgotten oldest first.
MAX_SOURCES = 16


def estimate_period(intervals: Sequence[int]) -> int:
    """The camera's frame period (ns) from intervals between received stamps.

    Gaps only ever lengthen intervals, so the short ones show the period: take the 25th
    percentile (a quarter of single-period intervals is enough, even when more than half of
    the frames are lost), then the median of the intervals up to 1.5 times it, so that jitter
    does not pull the estimate below the true period. ``0`` when there are none.
    """
    if not intervals:
        return 0
    ordered = sorted(intervals)
    low = ordered[(len(ordered) - 1) // 4]
    single = [i for i in ordered if i <= 1.5 * low]
    return single[(len(single) - 1) // 2]


def missing_frames(interval: int, period: int, max_missing: int = MAX_MISSING) -> int:
    """Frames missing between two received stamps ``interval`` ns apart at ``period`` ns.

    ``round(interval / period) - 1``, so jitter of up to half a period between two stamps
    (a quarter of a period on each) counts nothing; 0 for a
    gap longer than ``max_missing`` frames (a pause, not loss) or an unknown period.
    """
    if period <= 0 or interval <= 0:
        return 0
    missing = max(0, round(interval / period) - 1)
    return missing if missing <= max_missing else 0


class _Source:
    """The stamps of one camera."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.intervals: deque[int] = deque(maxlen=PERIOD_WINDOW)
        self.pending: list[int] = []  # intervals seen before the period was known

    def add(self, stamp: int) -> int:
        if self.last is None or stamp < self.last:  # first frame, or time went back (bag loop)
            self.last = stamp
            self.pending.clear()
            return 0
        interval = stamp - self.last
        if interval == 0:
            return 0  # the same frame twice (two subscriptions during a QoS change)
        self.last = stamp
        self.intervals.append(interval)
        self.pending.append(interval)
        if len(self.intervals) < MIN_INTERVALS:
            return 0
        period = estimate_period(self.intervals)
        lost = sum(missing_frames(i, period) for i in self.pending)
        self.pending.clear()
        return lost

    @property
    def period(self) -> int:
        return estimate_period(self.intervals) if len(self.intervals) >= MIN_INTERVALS else 0


class TransportLoss:
    """Running estimate of frames lost in transport, per camera (``header.frame_id``).

    Example::

        loss = TransportLoss()
        for stamp in (0, 100, 200, 300, 400, 600, 700):  # ns, 100 ns apart, 500 missing
            loss.add(stamp, "camera")
        loss.lost  # 1
    """

    def __init__(self) -> None:
        self._sources: dict[str, _Source] = {}
        self.lost = 0
        self.received = 0
        self._last_source = ""

    def add(self, stamp_ns: int, source: str = "") -> int:
        """Record a received frame's stamp; returns the frames found missing before it."""
        tracker = self._sources.get(source)
        if tracker is None:
            if len(self._sources) >= MAX_SOURCES:
                del self._sources[next(iter(self._sources))]
            tracker = self._sources[source] = _Source()
        self._last_source = source
        self.received += 1
        lost = tracker.add(stamp_ns)
        self.lost += lost
        return lost

    def period_ms(self) -> float:
        """The most recent camera's estimated frame period (ms); 0.0 while unknown."""
        tracker = self._sources.get(self._last_source)
        return tracker.period / 1e6 if tracker else 0.0

    def ratio(self) -> float:
        """Lost / (lost + received): the fraction of the camera's frames that never arrived."""
        total = self.lost + self.received
        return self.lost / total if total else 0.0

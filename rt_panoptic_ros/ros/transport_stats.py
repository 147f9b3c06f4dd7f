"""Frames lost between the camera and the node, estimated from gaps in the camera's stamps.

A camera stamps its frames at a steady period; when the node receives stamps ``t, t + 2T``,
the frame at ``t + T`` was published but never arrived (DDS dropped it: a best-effort reader
whose fragments did not fit the transport, a keep-last writer that replaced it before a
reliable reader had it). The node cannot see those frames, but it can count the holes.
Plain code (no rclpy), tested without ROS; the node feeds it from its subscription callback,
before the keep-latest slot, so frames the node itself drops while busy are not counted here.

When a gap is loss
------------------
Stamps alone cannot tell a lost frame from one the camera never published (uneven timing, a
pause, a new rate), and the count drives a WARN that never clears, so a gap counts only with
evidence that the camera kept publishing on the same clock through it; every doubt resolves
towards not counting. Each interval between consecutive stamps of one ``frame_id`` is judged
once ``CONTEXT_AFTER`` more frames have arrived, against up to ``CONTEXT_BEFORE`` intervals
before it and the ``CONTEXT_AFTER`` after it (:func:`missing_in_gap`). A gap of ``n`` periods
counts ``n - 1`` lost frames when all three hold:

1. **The camera is regular around it.** At least ``MIN_SINGLE_FRACTION`` of the context
   intervals are single periods (within ``SINGLE_BAND`` of their median). A camera with uneven
   timing (intervals anywhere in 0.5-1.5 periods, alternating 20/40 ms, a driver polled on a
   coarser tick) fails this, and none of its gaps count: its long intervals are its rhythm.
   So does a camera whose long intervals come at a steady spacing (three or more, spaced alike
   to within one frame): a camera rate beating a driver's tick skips, say, every sixth slot.
2. **The rate is the same before and after.** The mean single interval on each side agree
   within ``RATE_TOLERANCE``: a camera that went from 30 Hz to 10 Hz lost nothing.
3. **The missing stamps are predictable (same phase).** The gap is ``n`` periods within a
   tolerance of the observed jitter (largest deviation of a single interval from the period),
   plus ``n`` times the uncertainty of the period, plus ``PHASE_FLOOR``; a tolerance above
   ``MAX_PHASE_TOLERANCE`` periods means the phase cannot be checked, and the gap does not count.
   A camera that stops and is restarted resumes at an arbitrary phase, so a pause counts with a
   probability of only 2 x tolerance (about 4 % for an exact clock) whatever its length; a burst
   lost in transport leaves the camera's clock running, and counts however long it is (no cap).

What this cannot see (under-reported):

- heavy loss, more than about one frame in five: the intervals are then random multiples of the
  period, which no stamp test tells from a camera with an uneven rhythm. DDS's own count
  (``dds_samples_lost`` in the node) covers best-effort loss;
- loss on a camera whose intervals jitter by more than about a fifth of the period (stamped on
  the host at publish time by a busy timer): one missing frame hides in the jitter;
- long bursts on a jittered camera: the phase across ``n`` periods is known only to ``n`` times
  the period's uncertainty (stamp jitter of +-0.1 % of the period still shows bursts of two
  thousand frames, +-1 % only those of about a hundred);
- gaps in the last ``CONTEXT_AFTER`` frames before the stream stops, and gaps next to a reset.

It over-counts two cases, both indistinguishable from transport loss by their stamps: a camera
that skips exactly a whole number of periods on an exact clock (a triggered camera whose trigger
kept running while frames were dropped before DDS: those frames were lost between sensor and
node), and a rhythm too slow for the spacing test: one skipped slot every few seconds (fewer
than three in the context), and, right after a start or a reset, the first two long intervals
of a rhythm slower than one in six.

Out-of-order frames fill their hole while it is still unjudged; duplicates are ignored; a stamp
older than the judged frames (time went back: a bag replays from the start; or a frame more
than ``CONTEXT_AFTER`` frames late) restarts that ``frame_id``'s estimate.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise

#: Intervals before a gap it is judged against (about four seconds of a 30 Hz camera): the
#: period from them must hold across a long burst.
CONTEXT_BEFORE = 128
#: Intervals after a gap it is judged against; gaps are counted this many frames late.
CONTEXT_AFTER = 8
#: Intervals needed before a gap (after a start or a reset) to judge it at all: with the
#: intervals after it, enough to see a rhythm of one long interval in six.
MIN_BEFORE = 6
#: An interval within this fraction of the median interval is a single period.
SINGLE_BAND = 0.25
#: Fraction of the context that must be single periods for the camera to count as regular.
MIN_SINGLE_FRACTION = 0.8
#: Largest relative difference between the periods before and after a gap (same rate).
RATE_TOLERANCE = 0.05
#: Phase tolerance (periods) always allowed, for stamp rounding.
PHASE_FLOOR = 0.02
#: A phase tolerance (periods) above this cannot tell loss from a pause: the gap does not count.
MAX_PHASE_TOLERANCE = 0.2
#: Cameras (frame_ids) tracked at once; more are forgotten oldest first.
MAX_SOURCES = 16


def estimate_period(intervals: Sequence[int]) -> int:
    """The camera's frame period (ns): the (lower) median of intervals between received stamps.

    Gaps only lengthen intervals, so the median is the period while fewer than half of the
    intervals are gaps. ``0`` when there are none.
    """
    if not intervals:
        return 0
    ordered = sorted(intervals)
    return ordered[(len(ordered) - 1) // 2]


def missing_in_gap(before: Sequence[int], gap: int, after: Sequence[int]) -> int:
    """Frames lost in the interval ``gap`` (ns), judged against the intervals around it.

    ``before`` and ``after`` are the intervals (ns) of the same camera just before and after
    the gap, in order. Returns ``n - 1`` for a gap of ``n >= 2`` periods when the camera is
    regular, its rate is the same on both sides and the gap keeps its phase (the rule in the
    module docstring); ``0`` otherwise, including when the context is too short.
    """
    if len(before) < MIN_BEFORE or not after:
        return 0
    context = [*before, *after]
    median = estimate_period(context)
    if median <= 0 or gap < 1.5 * median:
        return 0
    first = [i for i in before if abs(i - median) <= SINGLE_BAND * median]
    second = [i for i in after if abs(i - median) <= SINGLE_BAND * median]
    singles = first + second
    if not first or not second or len(singles) < MIN_SINGLE_FRACTION * (len(context) + 1):
        return 0  # an uneven camera: its long intervals are its rhythm
    odd = [k for k, i in enumerate([*before, gap, *after]) if abs(i - median) > SINGLE_BAND * median]
    spacings = [b - a for a, b in pairwise(odd)]
    if len(odd) >= 3 and max(spacings) - min(spacings) <= 1:
        return 0  # long intervals at a steady spacing: a rhythm (a rate beating a tick), not loss
    rate_before, rate_after = sum(first) / len(first), sum(second) / len(second)
    if abs(rate_before - rate_after) > RATE_TOLERANCE * min(rate_before, rate_after):
        return 0  # the camera changed rate
    period = sum(singles) / len(singles)
    n = round(gap / period)
    # Stamp noise does not accumulate: a gap is off by at most the largest interval jitter.
    # The mean of single intervals telescopes within each run of them, so the period is off by
    # about jitter x runs / singles; across n periods that grows n times.
    jitter = max(abs(i - period) for i in singles)
    runs = 2 + len(context) - len(singles)
    tolerance = jitter + n * jitter * runs / len(singles) + PHASE_FLOOR * period
    if tolerance > MAX_PHASE_TOLERANCE * period or abs(gap - n * period) > tolerance:
        return 0  # the phase cannot be checked, or the camera resumed out of phase (a pause)
    return max(0, n - 1)


class _Source:
    """The recent stamps of one camera, in order; the intervals from ``judged`` on are unjudged."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.judged = 0  # index of the stamp that starts the first unjudged interval

    def add(self, stamp: int) -> int:
        stamps = self.stamps
        if stamps and stamp <= stamps[-1]:
            at = bisect_left(stamps, stamp)
            if stamps[at] == stamp:
                return 0  # the same frame twice (two subscriptions during a QoS change)
            if at <= self.judged:  # older than the judged frames: time went back (bag loop)
                self.stamps, self.judged = [stamp], 0
                return 0
            stamps.insert(at, stamp)  # a late frame: it fills its hole before that is judged
        else:
            stamps.append(stamp)
        lost = 0
        while len(stamps) - 2 - self.judged >= CONTEXT_AFTER:
            j = self.judged
            intervals = [b - a for a, b in pairwise(stamps)]
            lost += missing_in_gap(intervals[:j], intervals[j], intervals[j + 1 : j + 1 + CONTEXT_AFTER])
            self.judged += 1
            if self.judged > CONTEXT_BEFORE:
                del stamps[0]
                self.judged -= 1
        return lost

    @property
    def period(self) -> int:
        intervals = [b - a for a, b in pairwise(self.stamps)]
        return estimate_period(intervals) if len(intervals) >= MIN_BEFORE else 0


class TransportLoss:
    """Running estimate of frames lost in transport, per camera (``header.frame_id``).

    Gaps are counted ``CONTEXT_AFTER`` frames after they happen (see the module docstring).

    Example::

        loss = TransportLoss()
        for k in range(40):  # ns, 100 ns apart, the frame at 2500 missing
            if k != 25:
                loss.add(k * 100, "camera")
        loss.lost  # 1
    """

    def __init__(self) -> None:
        self._sources: dict[str, _Source] = {}
        self.lost = 0
        self.received = 0
        self._last_source = ""

    def add(self, stamp_ns: int, source: str = "") -> int:
        """Record a received frame's stamp; returns the frames judged missing with it."""
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

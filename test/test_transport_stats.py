"""Frames lost in transport, estimated from the camera's stamps (``ros/transport_stats.py``):
uneven cameras, pauses and new rates lose nothing; bursts count, however long."""

from __future__ import annotations

import random

import pytest

from rt_panoptic_ros.ros.transport_stats import (
    CONTEXT_AFTER,
    TransportLoss,
    estimate_period,
    missing_in_gap,
)

MS = 1_000_000  # ns
START = 1_000 * MS


def stamps(period_ms: float, count: int, missing=(), start: int = START, jitter: float = 0.0, seed: int = 0):
    """A steady camera's stamps (ns); ``jitter``: uniform noise on each stamp, in periods."""
    rng = random.Random(seed)
    return [
        start + int(k * period_ms * MS + rng.uniform(-jitter, jitter) * period_ms * MS)
        for k in range(count)
        if k not in missing
    ]


def walk(intervals_ms, start: int = START):
    """Stamps (ns) separated by the given intervals (ms)."""
    out, t = [start], start
    for interval in intervals_ms:
        t += int(interval * MS)
        out.append(t)
    return out


def feed(loss: TransportLoss, values, source: str = "camera") -> int:
    return sum(loss.add(v, source) for v in values)


def lost(values) -> int:
    loss = TransportLoss()
    feed(loss, values)
    return loss.lost


# --- the pieces --------------------------------------------------------------------------------


def test_period_is_the_median_interval():
    assert estimate_period([]) == 0
    assert estimate_period([100, 100, 200, 300, 100]) == 100  # gaps only lengthen intervals
    assert estimate_period([90, 110, 95, 105, 100, 300]) == 100


def test_missing_in_gap():
    steady = [100] * 20
    assert missing_in_gap(steady, 100, steady) == 0
    assert missing_in_gap(steady, 200, steady) == 1
    assert missing_in_gap(steady, 300, steady) == 2
    assert missing_in_gap(steady, 250, steady) == 0  # out of phase: a pause
    assert missing_in_gap(steady, 200, [300] * 10) == 0  # a new rate
    assert missing_in_gap([100] * 3, 200, steady) == 0  # too little context
    assert missing_in_gap([20, 40] * 10, 40, [20, 40] * 4) == 0  # a rhythm


# --- uneven cameras lose nothing ---------------------------------------------------------------


def test_a_steady_camera_loses_nothing_even_with_host_jitter():
    loss = TransportLoss()
    assert feed(loss, stamps(33.3, 300)) == 0
    assert feed(loss, stamps(33.3, 300, start=20_000 * MS, jitter=0.18)) == 0  # +-6 ms each
    assert loss.lost == 0 and loss.received == 600
    assert loss.period_ms() == pytest.approx(33.3, abs=2.0)


@pytest.mark.parametrize("seed", range(5))
def test_uniformly_uneven_intervals_lose_nothing(seed):
    """The measured case: 40 frames sent and answered must not report 38 lost."""
    rng = random.Random(seed)
    assert lost(walk([rng.uniform(0.5, 1.5) * 33.3 for _ in range(39)])) == 0
    assert lost(walk([rng.uniform(0.5, 1.5) * 33.3 for _ in range(3000)])) == 0


@pytest.mark.parametrize(
    "pattern",
    [
        [20, 40],  # alternating
        [20, 20, 20, 40],  # a 3:1 rhythm
        [33.3] * 5 + [66.7],  # a 25 Hz camera polled on a 30 Hz tick: every sixth slot empty
        [10, 10, 20],  # a 30 Hz camera polled on a 100 Hz tick, roughly
    ],
)
def test_rhythms_lose_nothing(pattern):
    assert lost(walk(pattern * 300)) == 0


def test_a_paused_camera_loses_nothing():
    """It resumes at its own rate but at a new phase; the stamps of the pause are not predictable."""
    loss = TransportLoss()
    start = START
    for pause_ms in (2_016.7, 5_310.0, 60_000.0 + 3.3 * 4.5, 417.0):  # seconds, then a short hiccup
        feed(loss, stamps(33.3, 100, start=start))
        start += int((99 * 33.3 + pause_ms) * MS)
    feed(loss, stamps(33.3, 100, start=start))
    assert loss.lost == 0


@pytest.mark.parametrize(
    ("before_ms", "after_ms"), [(33.3, 100.0), (33.3, 66.6), (100.0, 33.3), (50.0, 100.0)]
)
def test_a_new_rate_loses_nothing(before_ms, after_ms):
    values = stamps(before_ms, 100)
    values += stamps(after_ms, 100, start=values[-1] + int(after_ms * MS))
    assert lost(values) == 0


# --- bursts count, however long ----------------------------------------------------------------


@pytest.mark.parametrize("burst", [1, 2, 5, 30, 100, 1932, 5000])
def test_a_burst_on_a_steady_camera_counts_every_frame(burst):
    """The measured case: 1932 frames lost at a steady rate must not report 192."""
    loss = TransportLoss()
    assert feed(loss, stamps(33.3, 200 + burst, missing=range(150, 150 + burst))) == burst
    assert loss.received == 200
    assert loss.ratio() == pytest.approx(burst / (200 + burst))


@pytest.mark.parametrize(
    ("burst", "jitter"),
    [(1, 0.01), (5, 0.01), (30, 0.01), (100, 0.01), (1, 0.05), (10, 0.05), (1932, 0.001)],
)
@pytest.mark.parametrize("seed", range(3))
def test_a_burst_on_a_jittered_camera_counts_about_every_frame(burst, jitter, seed):
    values = stamps(33.3, 200 + burst, missing=range(150, 150 + burst), jitter=jitter, seed=seed)
    assert lost(values) == pytest.approx(burst, rel=0.1)


def test_scattered_loss_is_counted():
    rng = random.Random(1)
    missing = {k for k in range(3000) if rng.random() < 0.05}
    truth = len([k for k in missing if k < 3000 - CONTEXT_AFTER - 2])
    assert lost(stamps(33.3, 3000, missing)) == pytest.approx(truth, rel=0.05)


def test_gaps_are_counted_once_the_frames_after_them_arrived():
    loss = TransportLoss()
    values = stamps(100.0, 40, missing={20})
    assert feed(loss, values[: 20 + CONTEXT_AFTER]) == 0  # the gap is still unjudged
    assert feed(loss, values[20 + CONTEXT_AFTER :]) == 1


# --- what it cannot tell apart: it under-reports -----------------------------------------------


def test_heavy_loss_is_under_reported_not_invented():
    rng = random.Random(1)
    missing = {k for k in range(1000) if rng.random() < 0.5}
    assert lost(stamps(33.3, 1000, missing)) == 0


def test_a_long_burst_on_a_jittered_camera_is_not_counted():
    """+-1 % stamp jitter: the phase across 1932 periods is unknown, so it may have been a pause."""
    assert lost(stamps(33.3, 2132, missing=range(150, 2082), jitter=0.01)) == 0


def test_a_pause_of_a_whole_number_of_periods_on_an_exact_clock_counts():
    """Indistinguishable from loss (documented): the stamps after it are where the lost ones led."""
    values = stamps(100.0, 100) + stamps(100.0, 100, start=START + 60_000 * MS)
    assert lost(values) == 600 - 100


# --- order, duplicates, restarts, several cameras ----------------------------------------------


def test_out_of_order_and_duplicate_frames_are_not_loss():
    values = stamps(50.0, 200)
    for k in range(20, 180, 20):
        values[k], values[k + 1] = values[k + 1], values[k]  # neighbours swapped
    values[100:100] = [values[99], values[99]]  # a frame three times
    late = values.pop(60)  # one frame arrives five frames late: it fills its hole
    values.insert(65, late)
    loss = TransportLoss()
    assert feed(loss, values) == 0
    assert loss.received == 202


def test_time_going_back_restarts_the_estimate():
    loss = TransportLoss()
    feed(loss, stamps(100.0, 50))
    feed(loss, stamps(100.0, 50))  # a bag loops: the same stamps again
    assert loss.lost == 0
    feed(loss, stamps(100.0, 50, missing={20, 21}, start=500 * MS))  # and it counts again
    assert loss.lost == 2


def test_cameras_are_tracked_apart():
    loss = TransportLoss()
    left = stamps(100.0, 60, missing={30})
    right = stamps(100.0, 62, missing={20, 21, 22}, start=START + 37 * MS)
    uneven = walk([20, 40] * 29, start=START + 11 * MS)
    for a, b, c in zip(left, right, uneven, strict=True):
        loss.add(a, "left")
        loss.add(b, "right")
        loss.add(c, "remapped")
    assert loss.lost == 4
    assert loss.period_ms() in (20.0, 40.0)  # the most recent camera's

"""Rates and latency percentiles over a sliding window, for the node's diagnostics."""

from __future__ import annotations

import threading
import time
from collections import deque

from rt_panoptic_ros.percentile import percentile


class RateWindow:
    """Events per second over the last ``window`` seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and self._times[0] < now - self.window:
                self._times.popleft()
            return len(self._times) / self.window


class LatencyWindow:
    """The last ``size`` latencies (ms) and their percentiles."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, milliseconds: float) -> None:
        with self._lock:
            self._values.append(milliseconds)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100, :func:`~rt_panoptic_ros.percentile.percentile`'s
        nearest rank); 0.0 before any value."""
        with self._lock:
            values = list(self._values)
        return percentile(values, q) if values else 0.0

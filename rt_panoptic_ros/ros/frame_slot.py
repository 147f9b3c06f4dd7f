"""A keep-latest slot between the subscription callback and the inference thread.

A camera publishes faster than a CPU can segment; queueing frames would make every output
later than the one before (the existing ROS wrapper of this paper lags this way). The slot
holds one frame: a newer frame replaces the waiting one, which is counted as dropped, so the
latency stays one inference long whatever the input rate.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Frame:
    """A message waiting for inference and when it arrived (``time.monotonic()``)."""

    message: Any
    received: float


class FrameSlot:
    """Thread-safe single-frame mailbox with drop counting."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0

    def put(self, message: Any) -> None:
        """Hand over a frame (never blocks); a frame still waiting is replaced and counted."""
        with self._condition:
            if self._frame is not None:
                self.dropped += 1
            self._frame = Frame(message, time.monotonic())
            self._condition.notify()

    def take(self, timeout: float | None = None) -> Frame | None:
        """Wait for the next frame; ``None`` after :meth:`close` or when ``timeout`` passes."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            return None if self._closed else frame

    def close(self) -> None:
        """Wake the consumer for good (shutdown)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

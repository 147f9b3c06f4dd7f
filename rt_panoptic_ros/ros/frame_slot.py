"""Keep-latest slots between the subscription callbacks and the inference thread, and the
one-job handoff between two stage threads.

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


class MultiSlot:
    """One keep-latest slot per camera, taken together: the newest frame of every camera.

    Each camera keeps only its newest frame (a waiting one that is replaced is counted in
    :attr:`dropped` for that camera); :meth:`take` returns the frames of all cameras that have
    one, so several cameras share one network call. A camera that sends nothing never holds
    the others up longer than ``wait_s``.
    """

    def __init__(self, cameras: tuple[str, ...] = ("",)) -> None:
        self.cameras = tuple(cameras)
        self._condition = threading.Condition()
        self._frames: dict[str, Frame | None] = dict.fromkeys(self.cameras)
        self._closed = False
        self.dropped: dict[str, int] = dict.fromkeys(self.cameras, 0)

    def put(self, camera: str, message: Any) -> None:
        """Hand over ``camera``'s frame (never blocks); its waiting frame is replaced and counted."""
        with self._condition:
            if self._frames[camera] is not None:
                self.dropped[camera] += 1
            self._frames[camera] = Frame(message, time.monotonic())
            self._condition.notify_all()

    def take(self, wait_s: float = 0.0, timeout: float | None = None) -> dict[str, Frame] | None:
        """The waiting frames, camera -> frame in camera order (blocks until there is one).

        ``wait_s`` > 0: once a frame waits, wait for the other cameras' frames until that frame
        has waited ``wait_s`` (measured from its arrival, so a frame never waits longer than
        that for company). ``None`` after :meth:`close` or when ``timeout`` passes.
        """
        with self._condition:
            self._condition.wait_for(lambda: self._closed or any(self._frames.values()), timeout)
            if self._closed or not any(self._frames.values()):
                return None
            if wait_s > 0 and not all(self._frames.values()):
                oldest = min(f.received for f in self._frames.values() if f is not None)
                left = oldest + wait_s - time.monotonic()
                if left > 0:
                    self._condition.wait_for(lambda: self._closed or all(self._frames.values()), left)
                if self._closed:
                    return None
            frames = {c: f for c, f in self._frames.items() if f is not None}
            self._frames = dict.fromkeys(self.cameras)
            return frames

    def close(self) -> None:
        """Wake the consumer for good (shutdown)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class Handoff:
    """One job between two stage threads: ``put`` waits until the last one was taken, so nothing
    queues up between them."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._job: Any = None
        self._closed = False

    def put(self, job: Any) -> bool:
        """Hand ``job`` on (blocks while the previous one waits); ``False`` once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._job is None or self._closed)
            if self._closed:
                return False
            self._job = job
            self._condition.notify_all()
            return True

    def take(self) -> Any:
        """The next job (blocks); ``None`` once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._job is not None or self._closed)
            if self._closed:
                return None
            job, self._job = self._job, None
            self._condition.notify_all()
            return job

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

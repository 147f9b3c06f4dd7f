"""One progress view over a fleet run: lines above a bar of frames, bags done in its title."""

from __future__ import annotations

import threading
from typing import IO, Any


class FleetProgress:
    """Frames processed of the run's bags (frames/s and time left from tqdm), with "bags d/n"
    as the bar's description, and lines printed above the bar. Thread-safe: Ray's progress
    actor and the driver report from different threads.

    Args:
        prog: the tool's name, the lines' prefix.
        stream: where lines and the bar go (stderr).
    """

    def __init__(self, prog: str, stream: IO[str]) -> None:
        self.prog, self.stream = prog, stream
        self.frames: dict[str, int] = {}  # frames processed (written + skipped) per bag
        self._bar: Any = None
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        """A line on the stream, above the bar."""
        with self._lock:
            text = f"{self.prog}: {line}"
            if self._bar is not None:
                self._bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def open(self, total: int, title: str) -> None:
        """Show the bar (once; later calls do nothing): ``total`` frames expected."""
        from tqdm import tqdm

        with self._lock:
            if self._bar is None:
                self._bar = tqdm(
                    total=total, initial=sum(self.frames.values()), unit="frame", desc=title,
                    file=self.stream, dynamic_ncols=True, smoothing=0.05,
                )  # fmt: skip

    def set_frames(self, name: str, frames: int) -> None:
        """Bag ``name`` has ``frames`` processed now."""
        with self._lock:
            delta = frames - self.frames.get(name, 0)
            self.frames[name] = frames
            if self._bar is not None and delta:
                self._bar.update(delta)

    def drop(self, name: str, expected: int | None) -> None:
        """Bag ``name`` ends without its remaining frames (of ``expected``): off the total."""
        with self._lock:
            if self._bar is not None and expected:
                remaining = expected - self.frames.get(name, 0)
                self._bar.total = max(self._bar.n, self._bar.total - remaining)
                self._bar.refresh()

    def title(self, text: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.set_description(text, refresh=True)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

"""Ctrl-C and SIGTERM for tools that must finish what they write (a bag, a manifest).

Python raises ``KeyboardInterrupt`` for Ctrl-C in the main thread only; these helpers keep
to that: elsewhere they do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Ignore Ctrl-C inside the block: what closes a bag or writes a manifest is not cut short
    by a second Ctrl-C."""
    if not _on_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM (kill, a timeout, a launch system, a scheduler) stops the
    program as Ctrl-C does; the previous handler is back afterwards. Off the main thread
    nothing changes."""
    if not _on_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

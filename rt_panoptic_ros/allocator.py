"""glibc's malloc told to keep frame-sized blocks: the process's pages are faulted in once, not
every frame.

With its defaults glibc hands out every block above its mmap threshold (128 KiB at start,
raised to the size of the largest block freed so far) as fresh pages from the kernel, and gives
the free top of its heaps back to the kernel once it exceeds 128 KiB. A camera frame pipeline
allocates and frees blocks of megabytes several times per frame: DDS's receive buffers and the
message (6 MiB for a 1024x2048 rgb8 image), torch's activations and the decoder's maps. Each
time the kernel maps, zeroes and faults the pages in again, and the cost lands in system time
of whichever thread allocates. Measured here (``benchmarks/allocator.json``, 2 cores):

- receiving one 1024x2048 rgb8 image over DDS cost the subscribing process 12.1 ms of CPU
  (three quarters of it kernel time in Fast DDS's receive thread); 3.1 ms with large blocks
  kept;
- the Predictor (bundled model, 1024x2048, torch on the CPU) took 180 ms of CPU per frame,
  136 ms with large blocks kept.

:func:`keep_large_blocks` sets, through ``mallopt``, an mmap threshold of 32 MiB (the largest
glibc accepts on 64-bit machines: blocks up to that size come from the heap and are reused)
and a trim threshold of :data:`TRIM_THRESHOLD`: up to that much free memory stays at the top of
a heap for the next frame. Larger blocks (a 4096x4096 float32 image, an 8000x8000 frame) are
still mapped and returned to the kernel at once, so one huge frame does not stay resident.
The same can be set before a process starts, for a camera driver's process for example::

    export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456

It is a process-wide choice, so the package's programs make it at start (the node, the CLIs,
the demo and the test harness's processes); a program that embeds the Predictor calls
:func:`keep_large_blocks` itself. It is left alone where the user chose already:
``GLIBC_TUNABLES`` with a ``glibc.malloc`` setting, a ``MALLOC_*_`` variable, another allocator
in ``LD_PRELOAD`` (jemalloc, tcmalloc, mimalloc), or ``RT_PANOPTIC_MALLOC=off``; and where the
C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from dataclasses import dataclass

#: The switch: ``off`` (or ``0``, ``false``, ``no``, ``none``) keeps glibc's defaults.
SWITCH = "RT_PANOPTIC_MALLOC"
OFF_VALUES = ("off", "0", "false", "no", "none")
#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (glibc's maximum on 64-bit machines).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory kept at the top of a heap before it is given back to the kernel.
TRIM_THRESHOLD = 256 * 1024 * 1024
#: The user's own malloc settings, which win.
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


@dataclass(frozen=True)
class AllocatorChoice:
    """What :func:`keep_large_blocks` did, and why.

    Attributes:
        source: ``"kept"`` (set here), ``"user"`` (the user's settings or allocator),
            ``"off"`` (turned off with ``RT_PANOPTIC_MALLOC``), ``"not glibc"``, or
            ``"failed"`` (glibc refused a setting), ``"not chosen"`` (no call in this process).
    """

    source: str

    @property
    def kept(self) -> bool:
        return self.source == "kept"

    def describe(self) -> str:
        """One line for a start-up log."""
        if self.kept:
            return (
                f"malloc keeps blocks up to {MMAP_THRESHOLD >> 20} MiB (trim at {TRIM_THRESHOLD >> 20} MiB; "
                f"{SWITCH}=off to turn it off)"
            )
        return f"malloc left as it is ({self.source})"


def keep_large_blocks(environ: Mapping[str, str] | None = None) -> AllocatorChoice:
    """Tell glibc's malloc to keep frame-sized blocks in this process (see the module's doc).

    Call it early (before the first frames); it is safe to call again. ``environ``: the
    variables that decide (default: this process's).
    """
    global _CHOICE
    _CHOICE = _choose(os.environ if environ is None else environ)
    return _CHOICE


def give_back_free_memory() -> None:
    """Hand the free pages of every heap back to the kernel now (glibc's ``malloc_trim``), so
    that RSS shows what was released: after a model is let go, whatever the trim threshold."""
    if on_glibc():
        ctypes.CDLL(None).malloc_trim(0)


def process_choice() -> AllocatorChoice:
    """What :func:`keep_large_blocks` did in this process (for logs and diagnostics)."""
    return _CHOICE or AllocatorChoice("not chosen")


_CHOICE: AllocatorChoice | None = None


def _choose(env: Mapping[str, str]) -> AllocatorChoice:
    if env.get(SWITCH, "").strip().lower() in OFF_VALUES:
        return AllocatorChoice("off")
    preloaded = env.get("LD_PRELOAD", "")
    if (
        "glibc.malloc." in env.get("GLIBC_TUNABLES", "")
        or any(name in env for name in USER_VARIABLES)
        or any(name in preloaded for name in OTHER_ALLOCATORS)
    ):
        return AllocatorChoice("user")
    if not on_glibc():
        return AllocatorChoice("not glibc")
    libc = ctypes.CDLL(None)  # the process's own C library
    done = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return AllocatorChoice("kept" if done else "failed")


def on_glibc() -> bool:
    """Whether this process's C library is glibc (only glibc's malloc takes these settings)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not glibc (musl, macOS, Windows)
        return False

"""malloc keeping frame-sized blocks (allocator.py): who decides, and that glibc obeys.

Each effect is checked in a fresh process: malloc's settings belong to the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rt_panoptic_ros.allocator import SWITCH, keep_large_blocks, on_glibc

#: Allocates and frees an 8 MiB block twice and reports what glibc's mallinfo2 saw: bytes in
#: mmapped blocks while the block is held, and the heap's free bytes after the second free.
PROBE = """
import ctypes, json, sys
from rt_panoptic_ros.allocator import keep_large_blocks
choice = keep_large_blocks()
libc = ctypes.CDLL(None)
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 8 << 20
mapped = []
for _ in range(2):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    mapped.append(libc.mallinfo2().hblkhd >= size)
    libc.free(block)
print(json.dumps({"choice": choice.source, "mapped": mapped, "free_kept": libc.mallinfo2().fordblks >= size}))
"""


def _probe(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in (SWITCH, "GLIBC_TUNABLES", "LD_PRELOAD")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


glibc_only = pytest.mark.skipif(not on_glibc(), reason="needs glibc (mallopt, mallinfo2)")


@glibc_only
def test_frame_sized_blocks_are_kept_in_the_heap():
    """Kept: an 8 MiB block comes from the heap and stays there for the next frame. With glibc's
    defaults the first one is a fresh mapping, given back at once."""
    kept = _probe()
    assert kept == {"choice": "kept", "mapped": [False, False], "free_kept": True}, kept
    default = _probe(**{SWITCH: "off"})
    assert default["choice"] == "off" and default["mapped"][0], default


@glibc_only
def test_the_users_own_settings_win():
    tuned = _probe(GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")
    assert tuned["choice"] == "user" and tuned["mapped"] == [True, True], tuned


@pytest.mark.parametrize(
    ("environ", "source"),
    [
        ({SWITCH: "off"}, "off"),
        ({SWITCH: " False "}, "off"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "user"),
        ({"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "0"}, "user"),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "user"),
    ],
)
def test_who_decides(environ, source):
    choice = keep_large_blocks(environ)
    assert choice.source == source
    assert choice.describe() == f"malloc left as it is ({source})"

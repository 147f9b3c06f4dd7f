"""What a measurement ran on: CPU model, core count, GPU name, library versions.

Every benchmark JSON carries this beside its numbers, because a timing without its machine
cannot be compared with anything.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch


def rss_mb(pid: int | str = "self") -> float:
    """A process's resident memory (``VmRSS`` in ``/proc/<pid>/status``), MB; 0 if unknown
    (no such process, or not Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int | str = "self") -> float:
    """A process's CPU time so far, user + system, all its threads (``/proc/<pid>/stat``), s;
    0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), or the platform's best guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict[str, Any]:
    """A JSON-ready description of this machine and the libraries that set its speed."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if gpu else None,
    }


def write_benchmark(path: str | Path, benchmark: str, **fields: Any) -> dict[str, Any]:
    """Write a benchmark's JSON record: what it measured, the command that made it, its
    ``fields`` (settings and results), and the machine with its load at the end of the run.

    Returns:
        The record written.
    """
    record = {
        "benchmark": benchmark,
        "command": "python " + shlex.join(sys.argv),
        **fields,
        "machine": describe_machine(),
        "load_average_1_5_15_min": list(os.getloadavg()),
    }
    Path(path).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return record

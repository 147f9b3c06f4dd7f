"""Does cleanup give the memory back? The lifecycle node's RSS over configure / cleanup cycles.

usage: python benchmarks/lifecycle_memory.py [--model models/small_synthetic.pt] [--cycles 3]
           [--height 1024 --width 2048] [--frames 10] [--output benchmarks/lifecycle_memory.json]

One ``panoptic_lifecycle_node`` process, driven through the real ``lifecycle_msgs`` services
(:class:`~rt_panoptic_ros.ros.testing.lifecycle_driver.LifecycleDriver`). Each cycle:
configure, activate, ``--frames`` frames of ``--height`` x ``--width`` answered on all four
outputs, deactivate, cleanup; the node process's RSS (``VmRSS``) is read before the cycle and
after each step. Beside it, in this run, the floor: the same model in a plain Python process
(no ROS) loaded, run on the same frames and released (``gc`` and ``malloc_trim``), twice,
which shows what torch itself keeps after the first use (its lazily loaded kernels and
thread pools) and cannot be released.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rclpy

from rt_panoptic_ros.ros.dds_profile import use_shipped_profile
from rt_panoptic_ros.ros.testing.lifecycle_driver import LifecycleDriver, Transition
from rt_panoptic_ros.runtime.machine import rss_mb, write_benchmark

ROOT = Path(__file__).resolve().parents[1]

#: The floor, in a child process: RSS after import, load, frames, release; twice.
FLOOR = """
import gc, json, sys
import numpy as np
from rt_panoptic_ros.allocator import give_back_free_memory
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.runtime.machine import rss_mb
model, h, w, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
steps = {"imported": rss_mb()}
for cycle in (1, 2):
    predictor = Predictor(model, backend="torch")
    steps[f"loaded_{cycle}"] = rss_mb()
    rng = np.random.default_rng(0)
    for _ in range(frames):
        predictor(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    steps[f"after_frames_{cycle}"] = rss_mb()
    del predictor
    gc.collect()
    give_back_free_memory()
    steps[f"released_{cycle}"] = rss_mb()
print(json.dumps({k: round(v) for k, v in steps.items()}))
"""


def node_cycles(args: argparse.Namespace, workdir: Path) -> list[dict]:
    context = rclpy.Context()
    rclpy.init(context=context)
    parameters = {"model": args.model, "backend": "torch", "publish_overlay": True}
    driver = LifecycleDriver(
        context, "/lifecycle_bench", parameters, workdir / "node.log", frame_size=(args.height, args.width)
    )
    pid = driver.process.pid
    cycles = []
    try:
        for cycle in range(1, args.cycles + 1):
            steps = {"before_configure": rss_mb(pid)}
            if not driver.transition(Transition.TRANSITION_CONFIGURE):
                raise RuntimeError(f"configure failed\n{driver.log_tail()}")
            steps["configured"] = rss_mb(pid)
            driver.transition(Transition.TRANSITION_ACTIVATE)
            driver.wait_answered()
            for _ in range(args.frames):
                driver.answered(driver.send(), 60.0)
            steps["after_frames"] = rss_mb(pid)
            driver.transition(Transition.TRANSITION_DEACTIVATE)
            steps["deactivated"] = rss_mb(pid)
            driver.transition(Transition.TRANSITION_CLEANUP)
            time.sleep(0.5)  # the cleanup's release finishes after its reply
            steps["cleaned_up"] = rss_mb(pid)
            cycles.append({"cycle": cycle, **{k: round(v) for k, v in steps.items()}})
            print(cycles[-1], file=sys.stderr)
        driver.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    finally:
        driver.close()
        rclpy.shutdown(context=context)
    return cycles


def floor(args: argparse.Namespace) -> dict:
    command = [sys.executable, "-c", FLOOR, args.model, str(args.height), str(args.width), str(args.frames)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "small_synthetic.pt"))
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--output", default=str(Path(__file__).with_name("lifecycle_memory.json")))
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    use_shipped_profile()
    workdir = Path(tempfile.mkdtemp(prefix="lifecycle_bench_"))
    cycles = node_cycles(args, workdir)
    reference = floor(args)
    first, last = cycles[0], cycles[-1]
    write_benchmark(
        args.output,
        "lifecycle node: RSS (MB) over configure / activate / frames / deactivate / cleanup cycles",
        model=Path(args.model).name, backend="torch (CPU)", frame=[args.height, args.width],
        frames_per_cycle=args.frames, cycles=cycles,
        held_after_first_cleanup_mb=first["cleaned_up"] - first["before_configure"],
        growth_first_to_last_cleanup_mb=last["cleaned_up"] - first["cleaned_up"],
        plain_process_floor=reference,
        plain_process_held_after_release_mb=reference["released_1"] - reference["imported"],
    )  # fmt: skip


if __name__ == "__main__":
    main()

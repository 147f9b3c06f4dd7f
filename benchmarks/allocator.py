"""malloc keeping frame-sized blocks (``rt_panoptic_ros/allocator.py``) against glibc's defaults.

usage: python benchmarks/allocator.py [--rounds 3] [--messages 60] [--frames 20]
           [--model models/small_synthetic.pt] [--output benchmarks/allocator.json]

malloc's settings belong to a process, so every measurement runs in fresh processes, the two
settings alternating (``RT_PANOPTIC_MALLOC=off`` gives glibc's defaults), ``--rounds`` times:

1. receive: the harness's camera process publishes ``--messages`` 1024x2048 rgb8 images at
   10 Hz (reliable, the shipped Fast DDS profile) to the harness's listener process; the
   listener's CPU time (all threads: DDS's receive thread, the executor) per message received.
   Both processes have the setting under test.
2. predictor: the bundled model on 1024x2048 synthetic street scenes, ``--frames`` calls after
   one warm-up: median latency and CPU time per frame (all threads).

Medians over the rounds, and each round's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"kept": {}, "glibc defaults": {"RT_PANOPTIC_MALLOC": "off"}}


def measure_receive(env: dict[str, str], messages: int, domain: int) -> float:
    """CPU ms of a listener process per 1024x2048 rgb8 message received."""
    from rt_panoptic_ros.ros.testing.helper_processes import HelperProcess, helper_command
    from rt_panoptic_ros.runtime.machine import cpu_seconds

    env = {**env, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    listener = HelperProcess(helper_command("listen", "--topics", "image", "--depth", "5"), env)
    try:
        if not listener.wait_for("ready", 60):
            raise SystemExit("the listener did not start")
        camera = HelperProcess(
            helper_command("camera", "--sizes", "1024x2048", "--count", str(messages), "--rate", "10",
                           "--pause", "1"),
            env,
        )  # fmt: skip
        start = cpu_seconds(listener.process.pid)
        camera.finish(timeout=120)
        used = cpu_seconds(listener.process.pid) - start
    finally:
        listener.stop()
    received = sum(1 for r in listener.records if r.get("topic") == "image")
    if received == 0:
        raise SystemExit("the listener received nothing")
    return used / received * 1000


def measure_predictor(env: dict[str, str], model: str, frames: int, scenes: Path) -> dict[str, float]:
    """Median ms and CPU ms per frame of the Predictor, in a process of its own."""
    command = [sys.executable, __file__, "--child-predictor", "--model", model, "--frames", str(frames),
               "--scenes", str(scenes)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_predictor(model: str, frames: int, scenes: Path) -> None:
    from rt_panoptic_ros.allocator import keep_large_blocks

    keep_large_blocks()  # honours RT_PANOPTIC_MALLOC, as every program of the package does
    from rt_panoptic_ros.image_io import read_rgb
    from rt_panoptic_ros.runtime import Predictor
    from rt_panoptic_ros.runtime.bench import time_calls

    images = [read_rgb(p) for p in sorted((scenes / "images").iterdir())]
    print(json.dumps(time_calls(Predictor(model, backend="torch"), images, frames)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--model", default=str(ROOT / "models" / "small_synthetic.pt"))
    parser.add_argument("--output", default=str(Path(__file__).with_name("allocator.json")))
    parser.add_argument("--child-predictor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scenes", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_predictor:
        child_predictor(args.model, args.frames, args.scenes)
        return

    from rt_panoptic_ros.runtime.machine import write_benchmark
    from rt_panoptic_ros.training.data.synthetic import write_dataset

    scenes = Path(tempfile.mkdtemp(prefix="allocator_bench_")) / "scenes"
    write_dataset(scenes, 6, seed=11, height=1024, width=2048)
    domain = 100 + os.getpid() % 100
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for number in range(args.rounds):
        for name, extra in SETTINGS.items():
            env = {k: v for k, v in os.environ.items() if k != "RT_PANOPTIC_MALLOC"} | extra
            figures = {"receive_cpu_ms_per_message": measure_receive(env, args.messages, domain)}
            predictor = measure_predictor(env, args.model, args.frames, scenes)
            figures["predictor_median_ms"] = predictor["median_ms"]
            figures["predictor_cpu_ms"] = predictor["cpu_ms"]
            rounds[name].append({k: round(v, 2) for k, v in figures.items()})
            print(f"round {number + 1}/{args.rounds}, {name}: {rounds[name][-1]}", file=sys.stderr)
    medians = {
        name: {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}
        for name, runs in rounds.items()
    }
    write_benchmark(
        args.output,
        "malloc keeping frame-sized blocks vs glibc's defaults: DDS receive and Predictor CPU",
        image=[1024, 2048], messages=args.messages, frames=args.frames, model=Path(args.model).name,
        settings={"kept": "rt_panoptic_ros.allocator.keep_large_blocks()",
                  "glibc defaults": "RT_PANOPTIC_MALLOC=off"},
        medians=medians, rounds=rounds,
    )  # fmt: skip


if __name__ == "__main__":
    main()

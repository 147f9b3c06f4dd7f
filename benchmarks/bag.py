"""rt-panoptic-bag throughput against the Predictor alone, on the same frames (CPU).

usage: python benchmarks/bag.py [--preset small_cityscapes] [--height 512 --width 1024]
           [--frames 8] [--rounds 4] [--storage mcap] [--output benchmarks/bag.json]

One run: a bag of ``--frames`` random rgb8 frames is written with rosbags; then, ``--rounds``
times, the Predictor alone segments the frames in a loop (numpy RGB in, result out), and the
bag tool's pipeline (``BagJob.run``: read, deserialise, convert, segment, build messages,
serialise, write, close) processes the bag with the same warmed-up Predictor. The order
alternates (ABBA) so that a shared machine's changing load falls on both alike; rate =
frames / wall time. Within each tool pass, the time spent inside the Predictor is also
measured: model time / wall time is how well reading and writing hide behind the model,
a figure the machine's load cannot skew. Finally the console script runs once on the same
bag, start-up included, for its own summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from rt_panoptic_ros.config import preset
from rt_panoptic_ros.model import RTPanoNet, save_checkpoint
from rt_panoptic_ros.panoptic import PanopticResult
from rt_panoptic_ros.ros.bag.processing import BagJob
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.runtime.machine import describe_machine

TOPIC = "/cam/image"


def write_input_bag(path: Path, frames: list[np.ndarray], storage: str) -> None:
    """``frames`` as rgb8 ``sensor_msgs/Image`` on :data:`TOPIC` at 10 Hz, written by rosbags."""
    store = get_typestore(Stores.ROS2_KILTED)
    image = store.types["sensor_msgs/msg/Image"]
    header, stamp = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connection = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        for k, rgb in enumerate(frames):
            t = 1_700_000_000 * 10**9 + k * 100_000_000
            msg = image(header=header(stamp=stamp(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam"),
                        height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                        step=rgb.shape[1] * 3, data=rgb.reshape(-1))  # fmt: skip
            writer.write(connection, t, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def predictor_pass(predictor: Predictor, frames: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for frame in frames:
        predictor(frame)
    return len(frames) / (time.perf_counter() - start)


class TimedPredictor:
    """The Predictor, adding up the seconds spent inside its calls (the model's share)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor, self.cfg, self.seconds = predictor, predictor.cfg, 0.0

    def __call__(self, image: np.ndarray) -> PanopticResult:
        start = time.perf_counter()
        try:
            return self.predictor(image)
        finally:
            self.seconds += time.perf_counter() - start


def tool_pass(predictor: Predictor, bag: Path, out: Path) -> tuple[float, float]:
    """Frames/s of the bag tool's pipeline, and the fraction of its wall time spent in the model."""
    job = BagJob(bag, out, TOPIC, overwrite=True)
    timed = TimedPredictor(predictor)
    try:
        report = job.run(timed)
    finally:
        job.close()
    assert report.written == job.total and not report.skipped
    return report.fps, timed.seconds / report.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small_cityscapes")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--storage", choices=["sqlite3", "mcap"], default="mcap")
    parser.add_argument("--output", default=str(Path(__file__).with_name("bag.json")))
    args = parser.parse_args()

    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.frames)]
    workdir = Path(tempfile.mkdtemp(prefix="bag_bench_"))
    model = save_checkpoint(RTPanoNet(preset(args.preset)).eval(), workdir / "model.pt")
    bag = workdir / "in"
    write_input_bag(bag, frames, args.storage)

    predictor = Predictor(model, backend="torch")
    predictor(frames[0])  # warm-up, untimed
    predictor_fps, tool_fps, in_model, load = [], [], [], []
    for k in range(args.rounds):
        load.append(round(os.getloadavg()[0], 2))
        for step in ("predictor", "tool") if k % 2 == 0 else ("tool", "predictor"):
            if step == "predictor":
                predictor_fps.append(round(predictor_pass(predictor, frames), 3))
            else:
                fps, share = tool_pass(predictor, bag, workdir / "out")
                tool_fps.append(round(fps, 3))
                in_model.append(round(share, 4))
        print(f"round {k + 1}: predictor {predictor_fps[-1]} frames/s, bag tool {tool_fps[-1]} frames/s "
              f"({in_model[-1]:.1%} of it in the model)", file=sys.stderr)  # fmt: skip
    del predictor

    exe = Path(sys.executable).with_name("rt-panoptic-bag")
    command = [str(exe), str(bag), str(workdir / "cli"), "--image-topic", TOPIC, "--model", str(model),
               "--backend", "torch"]  # fmt: skip
    start = time.perf_counter()
    cli = subprocess.run(command, capture_output=True, text=True, check=True)
    cli_wall = time.perf_counter() - start
    cli_fps = float(re.search(r"([\d.]+) frames/s", cli.stderr.strip().splitlines()[-1]).group(1))

    mean_predictor, mean_tool = float(np.mean(predictor_fps)), float(np.mean(tool_fps))
    report = {
        "benchmark": "rt-panoptic-bag throughput vs the Predictor alone on the same frames",
        "command": "python " + shlex.join(sys.argv),
        "preset": args.preset,
        "weights": "random",
        "input": [args.height, args.width],
        "encoding": "rgb8",
        "frames": args.frames,
        "rounds": args.rounds,
        "order": "ABBA: predictor then tool in odd rounds, tool then predictor in even ones",
        "storage": args.storage,
        "backend": "torch (CPU)",
        "outputs": ["semantic", "instance", "detections"],
        "predictor_fps": predictor_fps,
        "bag_tool_fps": tool_fps,
        "predictor_fps_mean": round(mean_predictor, 3),
        "bag_tool_fps_mean": round(mean_tool, 3),
        "bag_tool_fraction_of_predictor": round(mean_tool / mean_predictor, 3),
        "bag_tool_time_in_model": in_model,
        "bag_tool_time_in_model_mean": round(float(np.mean(in_model)), 4),
        "cli": {
            "command": shlex.join(
                ["rt-panoptic-bag", "IN", "OUT", *command[3:5], "--model", "MODEL", *command[7:]]
            ),
            "fps_reported": cli_fps,
            "wall_s_with_startup": round(cli_wall, 1),
        },
        "machine": describe_machine(),
        "load_average_1_5_15_min": {"before": list(load_before), "after": list(os.getloadavg())},
        "load_average_1_min_per_round": load,
        "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "note": "2-core machine shared with other developers' jobs (one training a model) during the run: "
        "see the load averages; rates are far below the quiet machine's (backends_cpu.json)",
    }
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("predictor_fps_mean", "bag_tool_fps_mean",
                                             "bag_tool_fraction_of_predictor")}))  # fmt: skip
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()

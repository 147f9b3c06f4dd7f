"""Node overhead on the CPU: end-to-end latency through the ROS node minus the Predictor's own.

usage: python benchmarks/node.py [--preset small_cityscapes] [--height 512 --width 1024]
           [--frames 10] [--output benchmarks/node.json]

One run, side by side: the Predictor's latency on the frames in this process, then the same
frames sent one at a time (each after the previous one's outputs arrived, so none is
dropped) to ``panoptic_node`` in its own process over DDS, timed from publish to the arrival
of the last of its four outputs. Overhead = the difference of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy

from rt_panoptic_ros.config import preset
from rt_panoptic_ros.model import RTPanoNet, save_checkpoint
from rt_panoptic_ros.ros.testing.harness import CameraStream, OutputRecorder, Spinner, start_node, stop_node
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.runtime.machine import write_benchmark

NAMESPACE = "/node_bench"


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small_cityscapes")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--output", default=str(Path(__file__).with_name("node.json")))
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.frames)]
    workdir = Path(tempfile.mkdtemp(prefix="node_bench_"))
    model = save_checkpoint(RTPanoNet(preset(args.preset)).eval(), workdir / "model.pt")

    predictor = Predictor(model, backend="torch")
    predictor(frames[0])  # warm-up
    predictor_times = []
    for frame in frames:
        start = time.perf_counter()
        predictor(frame)
        predictor_times.append(time.perf_counter() - start)
    del predictor

    process = start_node({"model": str(model), "backend": "torch", "qos_reliability": "reliable"},
                         {"__ns": NAMESPACE}, log=workdir / "node.log")  # fmt: skip
    context = rclpy.Context()
    rclpy.init(context=context)
    camera = CameraStream(NAMESPACE, context=context)
    recorder = OutputRecorder(NAMESPACE, context=context)
    spinner = Spinner(camera, recorder)
    names = ("semantic", "instance", "detections", "overlay")
    node_times = []
    try:
        if not camera.wait_for_subscriber(120.0, process):
            raise SystemExit(f"panoptic_node did not start: {(workdir / 'node.log').read_text()}")
        time.sleep(1.0)  # let the node's output publishers match the recorder
        for k, frame in enumerate([frames[0], *frames]):  # the first one warms the path up
            key = camera.send(frame)
            deadline = time.monotonic() + 60
            arrival = recorder.received.arrival
            while time.monotonic() < deadline and not all(key in arrival[n] for n in names):
                time.sleep(0.001)
            if k > 0:
                node_times.append(max(arrival[n][key] for n in names) - camera.sent[key])
    finally:
        spinner.stop()
        camera.destroy_node()
        recorder.destroy_node()
        rclpy.shutdown(context=context)
        stop_node(process)

    predictor_ms, node_ms = median_ms(predictor_times), median_ms(node_times)
    report = write_benchmark(
        args.output, "panoptic_node overhead: publish -> all 4 outputs received, minus Predictor latency",
        preset=args.preset, input=[args.height, args.width], frames=args.frames, backend="torch (CPU)",
        transport="Fast DDS defaults, reliable, two processes on one machine",
        predictor_median_ms=predictor_ms, node_end_to_end_median_ms=node_ms,
        overhead_ms=round(node_ms - predictor_ms, 1),
        overhead_fraction=round((node_ms - predictor_ms) / predictor_ms, 3),
        node_end_to_end_ms=[round(t * 1000, 1) for t in node_times],
    )  # fmt: skip
    summary = ("predictor_median_ms", "node_end_to_end_median_ms", "overhead_ms", "overhead_fraction")
    print(json.dumps({k: report[k] for k in summary}))
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Several cameras: one node (one model, batched network calls) vs one node per camera.

usage: python benchmarks/cameras.py [--model models/small_synthetic.pt] [--height 512 --width 1024]
           [--counts 1 2 4] [--seconds 10] [--camera-hz 20] [--output benchmarks/cameras.json]

For each number of cameras, two set-ups on the same synthetic street scenes:

- ``one_node``: one ``panoptic_node`` with ``cameras: [cam0, ...]`` (``batch_wait_ms`` 0);
- ``node_per_camera``: one ``panoptic_node`` process per camera, each in ``<ns>/cam<k>``.

Every camera (``<ns>/cam<k>/image``, all in this process) sends at ``--camera-hz`` for
``--seconds``, faster than the node answers, and all four outputs of every camera are
subscribed. Measured: complete frames (all four outputs arrived) per second and camera over
the steady part, latency publish -> last output (p50, p90, all cameras), and the resident
memory of the node processes (sum of ``VmRSS`` in ``/proc/<pid>/status``, the largest of the
samples taken while streaming).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from std_msgs.msg import Header

from rt_panoptic_ros.image_io import read_rgb
from rt_panoptic_ros.percentile import percentile
from rt_panoptic_ros.ros.dds_profile import use_shipped_profile
from rt_panoptic_ros.ros.image_conversion import rgb_to_msg
from rt_panoptic_ros.ros.outputs import OUTPUT_TOPICS
from rt_panoptic_ros.ros.testing.harness import CameraStream, OutputRecorder, Spinner, start_node, stop_node
from rt_panoptic_ros.runtime.machine import rss_mb, write_benchmark
from rt_panoptic_ros.training.data.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]
NAMES = tuple(OUTPUT_TOPICS)
SETUPS = ("one_node", "node_per_camera")


def run(setup: str, count: int, args: argparse.Namespace, frames: list, workdir: Path) -> dict:
    namespace = f"/cams_bench_{setup}_{count}"
    cameras = [f"cam{k}" for k in range(count)]
    common = {"model": args.model, "backend": "torch", "qos_reliability": "reliable"}
    if setup == "one_node":
        processes = [
            start_node(
                {**common, "cameras": cameras}, {"__ns": namespace}, log=workdir / f"{setup}{count}.log"
            )
        ]
    else:
        processes = [
            start_node(common, {"__ns": f"{namespace}/{c}"}, log=workdir / f"{setup}{count}_{c}.log")
            for c in cameras
        ]
    context = rclpy.Context()
    rclpy.init(context=context)
    streams = [CameraStream(f"{namespace}/{c}", frame_id=c, context=context) for c in cameras]
    recorders = [OutputRecorder(f"{namespace}/{c}", context=context) for c in cameras]
    spinner = Spinner(*streams, *recorders)
    messages = [rgb_to_msg(frame, Header()) for frame in frames]
    try:
        for stream, recorder in zip(streams, recorders, strict=True):  # ready: a probe answered
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not (
                stream.publisher.get_subscription_count() > 0 and recorder.connected()
            ):
                if any(p.poll() is not None for p in processes):
                    raise SystemExit(f"a node exited; logs in {workdir}")
                time.sleep(0.05)
            answered = False
            while time.monotonic() < deadline and not answered:
                key = stream.send(frames[0], messages[0])
                wait = time.monotonic() + 5
                while time.monotonic() < wait and not (answered := recorder.complete(key)):
                    time.sleep(0.01)
            if not answered:
                raise SystemExit(
                    f"{setup} {count}: {stream.get_namespace()} never answered; logs in {workdir}"
                )

        sent: list[list[int]] = [[] for _ in cameras]
        rss: list[float] = []
        period, start, tick = 1.0 / args.camera_hz, time.monotonic(), 0
        while time.monotonic() - start < args.seconds:
            for k, stream in enumerate(streams):
                sent[k].append(
                    stream.send(frames[(tick + k) % len(frames)], messages[(tick + k) % len(frames)])
                )
            tick += 1
            if tick % max(1, int(args.camera_hz)) == 0:
                rss.append(sum(rss_mb(p.pid) for p in processes))
            time.sleep(max(0.0, start + tick * period - time.monotonic()))
        time.sleep(3.0)  # the last answers arrive
        rates, latencies = [], []
        for stream, recorder, keys in zip(streams, recorders, sent, strict=True):
            arrival = recorder.received.arrival
            done = sorted(
                (max(arrival[n][key] for n in NAMES), key) for key in keys if recorder.complete(key)
            )
            steady = done[len(done) // 5 :]  # skip the first fifth: start-up
            rates.append((len(steady) - 1) / (steady[-1][0] - steady[0][0]) if len(steady) > 1 else 0.0)
            latencies += [(t - stream.sent[key]) * 1000 for t, key in steady]
    finally:
        spinner.stop()
        for node in (*streams, *recorders):
            node.destroy_node()
        rclpy.shutdown(context=context)
        for process in processes:
            stop_node(process)
    figures = {
        "cameras": count,
        "setup": setup,
        "node_processes": len(processes),
        "sent_per_camera": len(sent[0]),
        "output_hz_per_camera": [round(r, 2) for r in rates],
        "output_hz_per_camera_mean": round(statistics.mean(rates), 2),
        "latency_p50_ms": round(percentile(latencies, 50), 1),
        "latency_p90_ms": round(percentile(latencies, 90), 1),
        "rss_mb_sum": round(max(rss, default=0.0), 0),
    }
    print(figures, file=sys.stderr)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "small_synthetic.pt"))
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--camera-hz", type=float, default=20.0)
    parser.add_argument("--output", default=str(Path(__file__).with_name("cameras.json")))
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = use_shipped_profile()

    workdir = Path(tempfile.mkdtemp(prefix="cameras_bench_"))
    write_dataset(workdir / "scenes", args.frames, seed=11, height=args.height, width=args.width)
    frames = [read_rgb(p) for p in sorted((workdir / "scenes" / "images").iterdir())]
    results = [run(setup, count, args, frames, workdir) for count in args.counts for setup in SETUPS]
    write_benchmark(
        args.output,
        "several cameras: one node (one model, batched) vs one node per camera",
        model=Path(args.model).name, input=[args.height, args.width], backend="torch (CPU)",
        camera_hz=args.camera_hz, seconds_per_run=args.seconds, outputs_subscribed=list(NAMES),
        transport=f"reliable, node process(es) + one camera/recorder process, {profile.describe()}",
        results=results,
    )  # fmt: skip


if __name__ == "__main__":
    main()

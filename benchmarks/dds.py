"""Large images between two processes over Fast DDS: delivery ratio and latency per configuration.

usage: python benchmarks/dds.py [--height 1024 --width 2048] [--frames 20] [--rate 2] [--singles 3]
           [--output benchmarks/dds.json]

One run, every configuration side by side, each a fresh pair of processes (a process reads its
Fast DDS profile once, at start):

- ``input``: a camera (``python -m rt_panoptic_ros.ros.testing.helper_processes camera``)
  publishes ``--frames`` rgb8 frames at ``--rate`` Hz, then ``--singles`` frames each sent
  alone (2 s apart), to a reader subscribed as the panoptic node subscribes (keep last 1),
  for each combination of reliability and of the shipped profile
  (config/fastdds_large_images.xml) in either process.
- ``outputs``: a publisher sends what the node sends per frame (semantic mono8, instance
  mono16, detections, overlay rgb8 at the same size) with keep-last 1 or 5, at 2 Hz and at
  10 Hz (a GPU node's rate), to a subscriber with rclpy's defaults (reliable, keep last 10, no
  profile): the measurement behind the node's ``OUTPUT_DEPTH``.

Latency = arrival (reader's system clock) minus the frame's stamp (the camera's system clock at
publish): both processes run on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from rt_panoptic_ros.percentile import percentile
from rt_panoptic_ros.ros.dds_profile import shipped_profile_path, without_profile
from rt_panoptic_ros.ros.testing.helper_processes import HelperProcess, helper_command
from rt_panoptic_ros.runtime.machine import write_benchmark

#: (name, camera reliability, reader reliability, profile in the camera's process, in the reader's)
INPUT_CONFIGS = [
    ("reliable, Fast DDS defaults", "reliable", "reliable", False, False),
    ("reliable, profile in the reader only (the node's default)", "reliable", "reliable", False, True),
    ("reliable, profile in both", "reliable", "reliable", True, True),
    ("best effort, Fast DDS defaults", "best_effort", "best_effort", False, False),
    ("best effort, profile in the reader only", "best_effort", "best_effort", False, True),
    ("best effort, profile in the camera only", "best_effort", "best_effort", True, False),
    ("best effort, profile in both", "best_effort", "best_effort", True, True),
    ("reliable camera read best effort (the old default), profile in the reader", "reliable", "best_effort",
     False, True),
]  # fmt: skip
#: (keep-last depth of the publisher, rate Hz, shipped profile in the publisher's process)
OUTPUT_CONFIGS = [(1, 2.0, True), (5, 2.0, True), (1, 10.0, True), (5, 10.0, True),
                  (1, 2.0, False), (5, 2.0, False), (1, 10.0, False), (5, 10.0, False)]  # fmt: skip


def environment(profile: bool, domain: int) -> dict[str, str]:
    """A helper process's environment: this machine only, its own domain, profile or defaults."""
    env = dict(os.environ) if profile else without_profile(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain))
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(shipped_profile_path())
    return env


def percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(percentile(values, q) / 1e6, 1)


def run_pair(
    sender: list[str], sender_env: dict, listener: list[str], listener_env: dict
) -> tuple[list, list]:
    """Start the listener, then the sender; returns (sent records, received records)."""
    reader = HelperProcess(listener, listener_env)
    try:
        if not reader.wait_for("ready", 60):
            raise SystemExit(f"listener did not start: {shlex.join(listener)}")
        camera = HelperProcess(sender, sender_env)
        camera.finish(timeout=600)
        time.sleep(1.0)  # the last frames' arrival
    finally:
        reader.stop()
    errors = [r["error"] for r in camera.records if "error" in r]
    if errors:
        raise SystemExit(f"{shlex.join(sender)}: {errors[0]}")
    sent = [r for r in camera.records if "stamp" in r]
    received = [r for r in reader.records if "topic" in r]
    return sent, received


def summarise(sent: list[dict], received: list[dict], topics: list[str]) -> dict[str, Any]:
    """Delivery and latency of the stream, and of the frames sent alone."""
    arrival: dict[str, dict[int, int]] = {t: {} for t in topics}
    for r in received:
        arrival[r["topic"]].setdefault(r["stamp"], r["arrival"])
    result: dict[str, Any] = {}
    for kind, frames in (
        ("stream", [s for s in sent if not s["phase"].startswith("single")]),
        ("single", [s for s in sent if s["phase"].startswith("single")]),
    ):
        if not frames:
            continue
        keys = [s["stamp"] for s in frames]
        complete = [k for k in keys if all(k in arrival[t] for t in topics)]
        latency = [max(arrival[t][k] for t in topics) - k for k in complete]
        result[kind] = {
            "sent": len(keys),
            "delivered": len(complete),
            "delivery_ratio": round(len(complete) / len(keys), 3),
            "latency_p50_ms": percentile_ms(latency, 50),
            "latency_p90_ms": percentile_ms(latency, 90),
            "latency_max_ms": percentile_ms(latency, 100),
        }
        if kind == "single":
            result[kind]["latency_ms"] = [round(v / 1e6, 1) for v in latency]
    return result


def publish_outputs(args: argparse.Namespace) -> int:
    """The ``--role outputs`` process: publish the node's four outputs per frame."""
    import numpy as np
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2DArray

    from rt_panoptic_ros.ros.image_conversion import instance_to_msg, rgb_to_msg, semantic_to_msg
    from rt_panoptic_ros.ros.outputs import OUTPUT_TOPICS
    from rt_panoptic_ros.ros.testing.harness import init_ros, stamp_key

    context, _ = init_ros(profile=args.profile)
    node = rclpy.create_node("dds_bench_outputs", context=context)
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=args.depth, reliability=ReliabilityPolicy.RELIABLE
    )
    publishers = {
        name: node.create_publisher(kind, topic, qos) for name, (topic, kind) in OUTPUT_TOPICS.items()
    }
    rng = np.random.default_rng(0)
    size = (args.height, args.width)
    semantic = semantic_to_msg(rng.integers(0, 19, size, dtype=np.uint8), Header())
    instance = instance_to_msg(rng.integers(0, 50, size, dtype=np.int32), Header())
    overlay = rgb_to_msg(rng.integers(0, 256, (*size, 3), dtype=np.uint8), Header())
    messages = {
        "semantic": semantic,
        "instance": instance,
        "detections": Detection2DArray(),
        "overlay": overlay,
    }
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in publishers.values()):
        time.sleep(0.05)
    time.sleep(1.0)
    start = time.monotonic()
    for k in range(args.frames):
        time.sleep(max(0.0, start + k / args.rate - time.monotonic()))
        header = Header(stamp=node.get_clock().now().to_msg(), frame_id="bench")
        for name in ("semantic", "instance", "detections", "overlay"):  # the node's order
            messages[name].header = header
            publishers[name].publish(messages[name])
        print(json.dumps({"stamp": stamp_key(header), "phase": "stream"}), flush=True)
    time.sleep(3.0)  # reliable repairs of the last frames
    node.destroy_node()
    rclpy.shutdown(context=context)
    return 0


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--singles", type=int, default=3)
    parser.add_argument("--output", default=str(Path(__file__).with_name("dds.json")))
    parser.add_argument("--role", choices=("main", "outputs"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--no-profile", dest="profile", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "outputs":
        sys.exit(publish_outputs(args))

    if shipped_profile_path() is None:
        raise SystemExit("config/fastdds_large_images.xml not found")
    domain = 150 + os.getpid() % 50
    load_before = uptime()
    size = f"{args.height}x{args.width}"
    inputs = []
    for name, camera_reliability, reader_reliability, camera_profile, reader_profile in INPUT_CONFIGS:
        camera = helper_command(
            "camera", "--reliability", camera_reliability, "--reader-reliability", reader_reliability,
            "--sizes", size, "--count", str(args.frames), "--rate", str(args.rate),
            "--single", str(args.singles), "--single-size", size, "--pause", "1",
            *([] if camera_profile else ["--no-profile"]),
        )  # fmt: skip
        listener = helper_command(
            "listen", "--topics", "image", "--reliability", reader_reliability, "--depth", "1",
            *([] if reader_profile else ["--no-profile"]),
        )  # fmt: skip
        sent, received = run_pair(
            camera, environment(camera_profile, domain), listener, environment(reader_profile, domain)
        )
        entry = {
            "config": name,
            "camera": {"reliability": camera_reliability, "depth": 5, "profile": camera_profile},
            "reader": {"reliability": reader_reliability, "depth": 1, "profile": reader_profile},
            **summarise(sent, received, ["image"]),
        }
        inputs.append(entry)
        print(json.dumps(entry), file=sys.stderr)

    outputs = []
    for depth, rate, profile in OUTPUT_CONFIGS:
        publisher = [
            sys.executable, __file__, "--role", "outputs", "--depth", str(depth), "--rate", str(rate),
            "--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width),
            *([] if profile else ["--no-profile"]),
        ]  # fmt: skip
        listener = helper_command("listen", "--no-profile")  # rclpy's defaults: reliable, keep last 10
        sent, received = run_pair(
            publisher, environment(profile, domain), listener, environment(False, domain)
        )
        entry = {
            "publisher": {"reliability": "reliable", "depth": depth, "rate_hz": rate, "profile": profile},
            "subscriber": "reliable, keep last 10, no profile (rclpy defaults)",
            **summarise(sent, received, ["semantic", "instance", "detections", "overlay"])["stream"],
        }
        outputs.append(entry)
        print(json.dumps(entry), file=sys.stderr)

    write_benchmark(
        args.output,
        "large images between two processes over Fast DDS: delivery ratio and latency",
        image=f"{size} rgb8 ({args.height * args.width * 3 / 1e6:.1f} MB)",
        stream=f"{args.frames} frames at {args.rate} Hz, then {args.singles} sent alone (2 s apart)",
        latency="reader's arrival minus the frame's stamp (both the system clock of this machine); "
        "stream: the frames delivered; single: each frame sent alone",
        profile="config/fastdds_large_images.xml",
        discovery="ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST",
        fastdds=metadata.version("ros_fastdds") if _installed("ros_fastdds") else None,
        input=inputs,
        outputs=outputs,
        uptime={"before": load_before, "after": uptime()},
    )


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main()

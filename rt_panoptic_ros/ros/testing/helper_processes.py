"""A camera or a listener in a process of its own: ``python -m rt_panoptic_ros.ros.testing.helper_processes
camera|listen``, JSON lines on stdout.

A process reads its Fast DDS profile once, at start, so a camera with or without the profile
must be a process of its own (``benchmarks/dds.py``, ``benchmarks/allocator.py``,
``test/test_dds.py``). :func:`helper_command` is the command line, :class:`HelperProcess`
runs one and collects its lines.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from rt_panoptic_ros.ros.image_conversion import rgb_to_msg
from rt_panoptic_ros.ros.outputs import OUTPUT_TOPICS
from rt_panoptic_ros.ros.testing.harness import CameraStream, Spinner, init_ros, stamp_key


def helper_command(*args: str) -> list[str]:
    """Command line of a camera or listener process (this module run by this Python)."""
    return [sys.executable, "-m", "rt_panoptic_ros.ros.testing.helper_processes", *args]


class HelperProcess:
    """A camera or listener process; its JSON lines are collected on a thread into ``records``."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(list(command), env=dict(env), stdout=subprocess.PIPE, text=True)
        self.records: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("{"):
                self.records.append(json.loads(line))

    def wait_for(self, key: str, timeout: float) -> bool:
        """Wait until a record has ``key`` (e.g. the listener's ``ready``); False if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(key in r for r in self.records):
                return True
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        return any(key in r for r in self.records)

    def finish(self, timeout: float) -> int:
        """Wait for the process to end by itself; returns its exit status."""
        code = self.process.wait(timeout=timeout)
        self.thread.join(timeout=5)
        return code

    def stop(self) -> int:
        """SIGINT, then wait (kill if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.thread.join(timeout=5)
        return self.process.returncode


def _size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def _emit(record: Mapping[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def run_camera(args: argparse.Namespace) -> int:
    """Publish rgb8 frames: ``count`` at ``rate`` Hz per size, then ``single`` frames alone.

    Prints one JSON line per frame sent (``stamp`` = its stamp key, ns of the system clock,
    ``phase``, ``size``) and ``{"done": ...}`` at the end. Frames whose index is in ``skip``
    are not published (their stamps are missing from the stream, as frames lost in transport).
    """
    context, choice = init_ros(profile=args.profile)
    camera = CameraStream(
        args.namespace, reliable=args.reliability == "reliable", depth=args.depth, context=context
    )
    spinner = Spinner(camera)
    skip = {int(k) for k in args.skip.split(",") if k}
    try:
        reader = args.reader_reliability or args.reliability
        policy = ReliabilityPolicy.RELIABLE if reader == "reliable" else ReliabilityPolicy.BEST_EFFORT
        if not camera.wait_for_reader(args.wait, policy):
            _emit({"error": f"no {reader} reader on {camera.publisher.topic_name} in {args.wait} s"})
            return 1
        time.sleep(args.settle)
        rng = np.random.default_rng(0)
        phases = [(size, args.count, 1.0 / args.rate) for size in args.sizes.split(",") if size]
        if args.single:
            phases.append((args.single_size, args.single, args.single_pause))
        for number, (size, count, period) in enumerate(phases):
            height, width = _size(size)
            single = args.single and number == len(phases) - 1
            phase = f"{'single_' if single else ''}{height}x{width}"
            camera.frame_id = f"{args.frame_id}_{phase}"
            message = rgb_to_msg(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), Header())
            start = time.monotonic() + (period if single else 0.0)
            for k in range(count):
                time.sleep(max(0.0, start + k * period - time.monotonic()))
                if k in skip and not single:
                    continue
                _emit({"stamp": camera.send(None, message), "phase": phase, "size": [height, width]})
            time.sleep(args.pause)
        _emit({"done": True, "profile": choice.describe() if choice else "off"})
        return 0
    finally:
        spinner.stop()
        camera.destroy_node()
        rclpy.shutdown(context=context)


class _Listener(Node):
    """Prints one JSON line per message received: topic, stamp key, arrival (ns, system clock)."""

    def __init__(self, args: argparse.Namespace, **kwargs: Any) -> None:
        super().__init__("dds_listener", namespace=args.namespace, **kwargs)
        reliability = (
            ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        )
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.depth, reliability=reliability)
        topics = {"image": ("image", Image), **OUTPUT_TOPICS}
        for name in args.topics.split(","):
            topic, message_type = topics[name]
            self.create_subscription(message_type, topic, self._callback(name), qos)

    @staticmethod
    def _callback(name: str):
        def report(message: Any) -> None:
            _emit({"topic": name, "stamp": stamp_key(message.header), "arrival": time.time_ns()})

        return report


def run_listener(args: argparse.Namespace) -> int:
    """Subscribe to ``topics`` and report every message until SIGINT/SIGTERM."""
    context, _ = init_ros(profile=args.profile)
    listener = _Listener(args, context=context)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    spinner = Spinner(listener)
    _emit({"ready": True})
    try:
        stop.wait()
    finally:
        spinner.stop()
        listener.destroy_node()
        rclpy.shutdown(context=context)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rt_panoptic_ros.ros.testing.helper_processes",
        description="A camera or a listener in a process of its own (JSON lines on stdout).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("camera", "listen"):
        sub = commands.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sub.add_argument("--namespace", default="")
        sub.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
        sub.add_argument(
            "--no-profile",
            dest="profile",
            action="store_false",
            help="keep this process's Fast DDS settings (do not apply the shipped profile)",
        )
    camera = commands.choices["camera"]
    camera.add_argument("--depth", type=int, default=5, help="publisher history (keep last)")
    camera.add_argument("--sizes", default="512x1024", help="comma-separated HxW, one stream each")
    camera.add_argument("--count", type=int, default=20, help="frames per size")
    camera.add_argument("--rate", type=float, default=2.0, help="frames per second")
    camera.add_argument("--skip", default="", help="comma-separated frame indices not to publish")
    camera.add_argument("--single", type=int, default=0, help="then this many frames, each sent alone")
    camera.add_argument("--single-size", default="1024x2048")
    camera.add_argument("--single-pause", type=float, default=2.0, help="seconds around each single frame")
    camera.add_argument("--frame-id", default="dds_camera", help="prefix; the phase is appended")
    camera.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a matching reader")
    camera.add_argument(
        "--reader-reliability",
        choices=("reliable", "best_effort"),
        help="the reliability the readers must have before sending (default: the camera's)",
    )
    camera.add_argument("--settle", type=float, default=1.0, help="seconds between matching and sending")
    camera.add_argument("--pause", type=float, default=2.0, help="seconds after each phase")
    listen = commands.choices["listen"]
    listen.add_argument("--depth", type=int, default=10, help="subscription history (rclpy's default 10)")
    listen.add_argument(
        "--topics", default="semantic,instance,detections,overlay", help="image and/or the node's outputs"
    )
    args = parser.parse_args(argv)
    return run_camera(args) if args.command == "camera" else run_listener(args)


if __name__ == "__main__":
    sys.exit(main())

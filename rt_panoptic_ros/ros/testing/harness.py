"""A camera stream and an output recorder: real rclpy nodes to drive and watch the panoptic node.

Used by the demo, the node benchmark and the tests, so all three exercise the node exactly
as a robot would: from another process, over DDS. Also starts the node itself as a process,
and, as ``python -m rt_panoptic_ros.ros.testing.harness camera|listen``, runs a camera or a listener in
a process of its own, so that each can have its own Fast DDS settings (a process reads its
profile once, at start; ``benchmarks/dds.py`` and ``test/test_dds.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from rt_panoptic_ros.allocator import keep_large_blocks
from rt_panoptic_ros.ros.dds_profile import ProfileChoice, use_shipped_profile
from rt_panoptic_ros.ros.image_conversion import rgb_to_msg
from rt_panoptic_ros.ros.messages import stamp_ns
from rt_panoptic_ros.ros.outputs import OUTPUT_TOPICS

#: A frame's identity across topics: its stamp in nanoseconds.
stamp_key = stamp_ns


def init_ros(profile: bool = True) -> tuple[rclpy.Context, ProfileChoice | None]:
    """A fresh rclpy context for a camera or listener process.

    With ``profile``, the process first gets the shipped Fast DDS profile, as the node gives
    it to itself (``dds_profile.py``): best-effort 1024×2048 frames leave a process only with
    it (``benchmarks/dds.json``). Call it before any other context in the process: Fast DDS
    reads its profile once. (``make demo`` gives the demo's process the profile through
    ``FASTDDS_DEFAULT_PROFILES_FILE``; the tests' processes get it from ``test/conftest.py``.)
    """
    choice = use_shipped_profile() if profile else None
    keep_large_blocks()  # as the node does: receiving large images costs a quarter of the CPU
    context = rclpy.Context()
    rclpy.init(context=context)
    return context, choice


@dataclass
class Received:
    """Messages received per output topic, keyed by stamp, with their arrival times."""

    messages: dict[str, dict[int, Any]] = field(default_factory=dict)
    arrival: dict[str, dict[int, float]] = field(default_factory=dict)


class OutputRecorder(Node):
    """Subscribes to the panoptic node's outputs (reliable, as the node publishes them)."""

    def __init__(self, namespace: str = "", outputs: Sequence[str] = tuple(OUTPUT_TOPICS), **kwargs: Any):
        super().__init__("panoptic_output_recorder", namespace=namespace, **kwargs)
        self.received = Received()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified on every message
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._output_subscriptions = []
        for name in outputs:
            topic, message_type = OUTPUT_TOPICS[name]
            self.received.messages[name] = {}
            self.received.arrival[name] = {}
            self._output_subscriptions.append(
                self.create_subscription(message_type, topic, self._callback(name), qos)
            )

    def connected(self) -> bool:
        """Every output topic has a publisher matched: the node has (almost surely) seen this
        recorder too, so it will not skip an output as unsubscribed."""
        return all(s.get_publisher_count() > 0 for s in self._output_subscriptions)

    def _callback(self, name: str):
        def store(message: Any) -> None:
            with self._lock:
                key = stamp_key(message.header)
                self.received.messages[name][key] = message
                self.received.arrival[name][key] = time.monotonic()
                self._arrived.notify_all()

        return store

    def wait_complete(self, key: int, timeout: float) -> bool:
        """Wait until the frame stamped ``key`` has arrived on every recorded output; its result.

        Sleeps until a message arrives instead of polling, so a benchmark that waits does not
        take CPU time (and cache) from the processes it measures.
        """
        with self._arrived:
            return self._arrived.wait_for(lambda: self.complete(key), timeout)

    def complete(self, key: int) -> bool:
        """Whether the frame stamped ``key`` has arrived on every recorded output."""
        return all(key in times for times in self.received.arrival.values())

    def count(self, name: str) -> int:
        with self._lock:
            return len(self.received.messages[name])


class CameraStream(Node):
    """Publishes RGB frames as ``sensor_msgs/Image`` on ``image`` and remembers when."""

    def __init__(
        self,
        namespace: str = "",
        frame_id: str = "camera",
        reliable: bool = True,
        depth: int = 5,
        **kwargs: Any,
    ):
        super().__init__("panoptic_camera_stream", namespace=namespace, **kwargs)
        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)
        self.publisher = self.create_publisher(Image, "image", qos)
        self.frame_id = frame_id
        self.sent: dict[int, float] = {}

    def send(self, rgb: np.ndarray, message: Image | None = None) -> int:
        """Publish ``rgb`` (or a prepared ``message``) stamped now; returns its stamp key."""
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        if message is None:
            message = rgb_to_msg(rgb, header)
        else:
            message.header = header
        key = stamp_key(header)
        self.sent[key] = time.monotonic()
        self.publisher.publish(message)
        return key

    def wait_for_reader(self, timeout: float, reliability: ReliabilityPolicy | None = None) -> bool:
        """Wait until a subscriber matches and every subscription on ``image`` has ``reliability``.

        ``reliability``: default, the camera's own. A best-effort subscription also matches a
        reliable camera, so a count alone would not show that the panoptic node
        (``qos_reliability:=auto``) has switched to reliable.
        """
        ours = reliability or self.publisher.qos_profile.reliability
        topic = self.publisher.topic_name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            readers = self.get_subscriptions_info_by_topic(topic)
            if (
                self.publisher.get_subscription_count() > 0
                and readers
                and all(r.qos_profile.reliability == ours for r in readers)
            ):
                return True
            time.sleep(0.05)
        return False

    def wait_for_subscriber(self, timeout: float, process: subprocess.Popen | None = None) -> bool:
        """Wait until something (the panoptic node, once ready) subscribes to ``image``.

        Gives up early when ``process`` (the node's) has exited.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.publisher.get_subscription_count() > 0:
                return True
            if process is not None and process.poll() is not None:
                return False
            time.sleep(0.05)
        return False


class Spinner:
    """Spins nodes on a background thread (an executor of their own)."""

    def __init__(self, *nodes: Node) -> None:
        self.executor = SingleThreadedExecutor(context=nodes[0].context)
        for node in nodes:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context shut down under us: nothing left to spin
            pass

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)


def node_command(
    parameters: Mapping[str, Any],
    remaps: Mapping[str, str] | None = None,
    executable: str = "panoptic_node",
) -> list[str]:
    """Command line of the node's ``executable`` (or ``panoptic_lifecycle_node``) with ROS
    parameters and remappings."""
    exe = shutil.which(executable, path=str(Path(sys.executable).parent)) or executable
    args = [exe, "--ros-args"]
    for name, value in parameters.items():
        args += ["-p", f"{name}:={_ros_value(value)}"]
    for source, target in (remaps or {}).items():
        args += ["-r", f"{source}:={target}"]
    return args


def start_node(
    parameters: Mapping[str, Any],
    remaps: Mapping[str, str] | None = None,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    executable: str = "panoptic_node",
) -> subprocess.Popen:
    """Start the panoptic node as its own process (output to ``log`` or inherited).

    ``env``: the process environment (default: this process's); ``executable``:
    ``panoptic_lifecycle_node`` for the lifecycle variant.
    """
    out = open(log, "w") if log else None  # closed by stop_node
    process = subprocess.Popen(
        node_command(parameters, remaps, executable),
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        env=dict(os.environ if env is None else env),
    )
    process.log_file = out  # type: ignore[attr-defined]
    return process


def stop_node(process: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGINT (as Ctrl-C), then wait; kill if it hangs. Returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log_file = getattr(process, "log_file", None)
    if log_file is not None:
        log_file.close()
    return process.returncode


def _ros_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- helper processes: python -m rt_panoptic_ros.ros.testing.harness camera|listen ----------------------


def helper_command(*args: str) -> list[str]:
    """Command line of a camera or listener process (this module run by this Python)."""
    return [sys.executable, "-m", "rt_panoptic_ros.ros.testing.harness", *args]


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
        prog="python -m rt_panoptic_ros.ros.testing.harness",
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

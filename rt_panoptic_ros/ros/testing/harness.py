"""A camera stream and an output recorder: real rclpy nodes to drive and watch the panoptic node.

Used by the demo, the node benchmark and the tests, so all three exercise the node exactly
as a robot would: from another process, over DDS. Also starts the node itself as a process.
A camera or a listener in a process of its own (its own Fast DDS and malloc settings) is
``helper_processes.py``.
"""

from __future__ import annotations

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

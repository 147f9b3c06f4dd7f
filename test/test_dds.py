"""Large images over DDS, for real: cameras, the node and a listener, each its own process.

One panoptic node (default ``qos_reliability:=auto``, applying the shipped Fast DDS profile to
itself) serves a camera process per configuration in turn, so it also has to follow each
camera's reliability. A listener process with rclpy's default settings (reliable, keep last
10) and no profile, as RViz on a robot would be, receives its outputs. Frames are 512×1024 and
1024×2048 rgb8 at 2 Hz; the network runs at 128×256 (a tiny rigged model) so that inference
stays well under the 500 ms between frames and every miss is a transport loss.

The measurements these tests stand on are in ``benchmarks/dds.json``.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import rclpy
from conftest import rigged_model
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from rt_panoptic_ros.model import save_checkpoint
from rt_panoptic_ros.ros.dds_profile import PROFILE_VARIABLES, without_profile
from rt_panoptic_ros.ros.testing.harness import Spinner, start_node, stop_node
from rt_panoptic_ros.ros.testing.helper_processes import HelperProcess, helper_command

pytestmark = pytest.mark.slow

NAMESPACE = "/dds"
OUTPUTS = ("semantic", "instance", "detections", "overlay")
SIZES = "512x1024,1024x2048"
FRAMES = 20
#: Transport allowance of a frame sent alone, beyond the node's own time for it (the issue's
#: bar). A heartbeat wait adds seconds: without any profile this test measured 0.36-3.4 s end to
#: end against 174 ms in the node; benchmarks/dds.json has the node's outputs at up to 1.0 s.
SINGLE_FRAME_MARGIN_MS = 50.0


def camera_env(profile: bool) -> dict[str, str]:
    return dict(os.environ) if profile else without_profile(os.environ)


class Diagnostics(Node):
    """The node's /diagnostics, in this process: the latest values and when they came."""

    def __init__(self, **kwargs) -> None:
        super().__init__("dds_test_diagnostics", **kwargs)
        self.latest: dict[str, str] = {}
        self.history: list[dict[str, str]] = []
        self.received = 0.0
        self._lock = threading.Lock()
        self.create_subscription(DiagnosticArray, "/diagnostics", self._store, 10)

    def _store(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith(f"{NAMESPACE}/panoptic_node"):
                with self._lock:
                    self.latest = {kv.key: kv.value for kv in status.values}
                    self.latest["_level"] = str(int.from_bytes(status.level, "little"))
                    self.latest["_message"] = status.message
                    self.latest["_index"] = str(len(self.history))
                    self.history.append(self.latest)
                    self.received = time.monotonic()

    def after(self, moment: float, timeout: float = 10.0) -> dict[str, str]:
        """The first values published after ``moment`` (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.received > moment:
                    return dict(self.latest)
            time.sleep(0.05)
        raise AssertionError("no diagnostics from the node")


class Rig:
    """The node, the default-settings listener and this process's diagnostics listener."""

    def __init__(self, tmp_path) -> None:
        model = save_checkpoint(rigged_model(), tmp_path / "rigged.pt")
        self.log = tmp_path / "node.log"
        # The node applies the shipped profile itself (its main): none in its environment.
        # OMP_WAIT_POLICY=PASSIVE: on this shared 2-core machine torch's spinning OpenMP threads
        # made a 128×256 forward take 2.1 s instead of 65 ms while another process was busy.
        env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        parameters = {"model": str(model), "backend": "torch", "input_height": 128, "input_width": 256}
        self.node = start_node(parameters, {"__ns": NAMESPACE}, log=self.log, env=env)
        self.listener = HelperProcess(
            helper_command("listen", "--namespace", NAMESPACE, "--no-profile"), without_profile(os.environ)
        )
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.diagnostics = Diagnostics(context=self.context)
        self.spinner = Spinner(self.diagnostics)
        assert self.listener.wait_for("ready", 60), "listener did not start"
        deadline = time.monotonic() + 120
        while (
            "ready:" not in self.log.read_text() and self.node.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert "ready:" in self.log.read_text(), self.log.read_text()

    def camera(self, name: str, *args: str, profile: bool, timeout: float = 180) -> list[dict]:
        """Run a camera process to its end; returns its frames (stamp, phase, size).

        ``name`` starts its frame_ids: each test's camera is a new camera to the node's
        transport-loss estimate, not the previous one after a long pause.
        """
        command = helper_command("camera", "--namespace", NAMESPACE, "--frame-id", name, *args)
        camera = HelperProcess(command, camera_env(profile))
        assert camera.finish(timeout) == 0, f"camera failed: {camera.records}\n{self.tail()}"
        return [r for r in camera.records if "stamp" in r]

    def answers(self, frames: list[dict], timeout: float = 10.0) -> dict[int, dict[str, int]]:
        """Arrival (ns) of each output per frame stamp, once no more arrive."""
        keys = {f["stamp"] for f in frames}
        deadline, count = time.monotonic() + timeout, -1
        while time.monotonic() < deadline:
            received = [r for r in self.listener.records if r.get("stamp") in keys]
            if len(received) == count and count >= 0:
                break
            count = len(received)
            time.sleep(1.0)
        arrival: dict[int, dict[str, int]] = {}
        for r in self.listener.records:
            if r.get("stamp") in keys:
                arrival.setdefault(r["stamp"], {})[r["topic"]] = r["arrival"]
        return arrival

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def close(self) -> int:
        self.listener.stop()
        self.spinner.stop()
        self.diagnostics.destroy_node()
        rclpy.shutdown(context=self.context)
        return stop_node(self.node)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("dds"))
    yield r
    assert r.close() == 0, r.tail()
    assert "Traceback" not in r.log.read_text()


def check_stream(rig: Rig, frames: list[dict], before: dict[str, str], expect_qos: str) -> dict[str, str]:
    """≥ 19 of 20 answered per size, the listener got every output the node published, and
    while the camera ran the node subscribed with ``expect_qos``."""
    arrival = rig.answers(frames)
    after = rig.diagnostics.after(time.monotonic())
    for size in SIZES.split(","):
        sent = [f["stamp"] for f in frames if f["phase"] == size]
        answered = [k for k in sent if k in arrival]
        assert len(answered) >= len(sent) - 1, (size, len(answered), len(sent), rig.tail())
    partial = {k: sorted(v) for k, v in arrival.items() if set(v) != set(OUTPUTS)}
    assert not partial, f"outputs lost on the way to the listener: {partial}"
    published = int(after["frames_out"]) - int(before["frames_out"])
    assert published == len(arrival), f"node published {published} answers, the listener got {len(arrival)}"
    during = {d["input_qos"] for d in rig.diagnostics.history[int(before["_index"]) :]}
    assert any(q.startswith(expect_qos) for q in during), during
    return after


def test_a_frame_sent_alone_is_answered_without_a_heartbeat_wait(rig):
    """Profile in the camera's process too: end to end = the node's own time + a few ms.

    First in this file, so that the node's latency window holds only these frames.
    """
    before = rig.diagnostics.after(time.monotonic())
    frames = rig.camera(
        "single", "--reliability", "reliable", "--sizes", "", "--single", "3", "--single-size", "1024x2048",
        "--single-pause", "1.5", profile=True,
    )  # fmt: skip
    arrival = rig.answers(frames)
    assert len(arrival) == 3 and all(set(a) == set(OUTPUTS) for a in arrival.values()), arrival
    after = rig.diagnostics.after(time.monotonic())
    assert int(after["frames_out"]) - int(before["frames_out"]) == 3
    end_to_end = [(max(arrival[f["stamp"]].values()) - f["stamp"]) / 1e6 for f in frames]
    node_ms = float(after["latency_p50_ms"])  # receipt -> all four outputs published, in the node
    # A heartbeat wait delays every frame sent alone (by hundreds of ms to seconds); a busy
    # shared CPU delays some. The best of the three separates the two.
    assert min(end_to_end) <= node_ms + SINGLE_FRAME_MARGIN_MS, (end_to_end, node_ms)
    during = {d["input_qos"] for d in rig.diagnostics.history[int(before["_index"]) :]}
    assert any(q.startswith("reliable (auto: 1 publisher") for q in during), during
    assert "(shipped" in after["dds_profile"], after["dds_profile"]
    assert after["malloc"].startswith("malloc keeps blocks up to 32 MiB"), after["malloc"]


def test_reliable_camera_without_the_profile(rig):
    """A camera driver as it is: reliable, Fast DDS defaults. The node follows it to reliable."""
    before = rig.diagnostics.after(time.monotonic())
    frames = rig.camera(
        "reliable", "--reliability", "reliable", "--sizes", SIZES, "--count", str(FRAMES), profile=False
    )
    check_stream(rig, frames, before, "reliable (auto: 1 publisher")


def test_best_effort_camera_with_the_profile(rig):
    """A best-effort camera (sensor-data QoS) given the shipped profile: the node follows it."""
    before = rig.diagnostics.after(time.monotonic())
    frames = rig.camera(
        "best_effort", "--reliability", "best_effort", "--sizes", SIZES, "--count", str(FRAMES), profile=True
    )
    check_stream(rig, frames, before, "best_effort (auto: 1 of 1 publisher")


def test_reliable_camera_with_the_profile_and_frames_lost_on_the_way(rig):
    """Frames 7-9 of each size never published: the diagnostics estimate 3 + 3 lost in transport."""
    before = rig.diagnostics.after(time.monotonic())
    frames = rig.camera(
        "gaps", "--reliability", "reliable", "--sizes", SIZES, "--count", str(FRAMES), "--skip", "7,8,9",
        profile=True,
    )  # fmt: skip
    assert len(frames) == 2 * (FRAMES - 3)
    after = check_stream(rig, frames, before, "reliable (auto: 1 publisher")
    arrival = rig.answers(frames)
    # Real losses would add to the estimate; a frame the node answered is one it received.
    lost = int(after["lost_in_transport"]) - int(before["lost_in_transport"])
    assert 6 <= lost <= 6 + (len(frames) - len(arrival)), (lost, after["_message"])
    assert "lost in transport" in after["_message"] and after["_level"] == "1"  # WARN
    assert float(after["input_period_ms"]) == pytest.approx(500.0, abs=50.0)


def test_best_effort_camera_without_the_profile_loses_large_frames(rig):
    """What the README says does not work, and why the profile ships: Fast DDS 3.2 defaults."""
    before = rig.diagnostics.after(time.monotonic())
    frames = rig.camera(
        "lossy", "--reliability", "best_effort", "--sizes", "1024x2048", "--count", "6", profile=False
    )
    assert len(frames) == 6
    assert len(rig.answers(frames, timeout=4.0)) <= 1
    after = rig.diagnostics.after(time.monotonic())
    assert after["input_qos"].startswith("best_effort"), after["input_qos"]
    assert int(after["frames_in"]) - int(before["frames_in"]) <= 1
    # Nothing arrives, so no stamp gap shows; DDS itself reports the samples it lost.
    assert int(after["dds_samples_lost"]) > int(before["dds_samples_lost"]), after
    assert "lost by DDS" in after["_message"] and "profile" in after["_message"], after["_message"]

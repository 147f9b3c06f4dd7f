"""Several cameras through one node and one model, for real: a node process in ``/ns`` with
``cameras: [front, rear]``, a camera and an output recorder per camera in this process.

Each frame is answered on its own camera's four outputs, with its own header and size; a
frame of one camera is answered without waiting for the other; ``/diagnostics`` carries one
status per camera and each camera gets its own latched ``label_info``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from conftest import rigged_model, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from vision_msgs.msg import LabelInfo

from rt_panoptic_ros.model import save_checkpoint
from rt_panoptic_ros.ros.testing.harness import CameraStream, OutputRecorder, Spinner, start_node, stop_node

READY_TIMEOUT = 90.0
OUTPUTS = ("semantic", "instance", "detections", "overlay")
CAMERAS = ("front", "rear")
#: The node's batch_wait_ms: a frame waits at most this long for the other camera's frame.
BATCH_WAIT_MS = 300


def rgb_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class CamerasRig:
    """The node process, and per camera a CameraStream and an OutputRecorder in ``/ns/<camera>``."""

    def __init__(self, context, model_file, log):
        parameters = {
            "model": str(model_file), "backend": "torch", "cameras": list(CAMERAS),
            "batch_wait_ms": BATCH_WAIT_MS,
        }  # fmt: skip
        self.process = start_node(parameters, {"__ns": "/ns"}, log=log)
        self.log = log
        self.cameras = {c: CameraStream(f"/ns/{c}", frame_id=f"{c}_camera", context=context) for c in CAMERAS}
        self.recorders = {c: OutputRecorder(f"/ns/{c}", context=context) for c in CAMERAS}
        self.diagnostics: list[DiagnosticArray] = []
        self.recorders["front"].create_subscription(
            DiagnosticArray, "/diagnostics", self.diagnostics.append, 10
        )
        self.spinner = Spinner(*self.cameras.values(), *self.recorders.values())

    def answered(self, camera: str, key: int) -> bool:
        got = self.recorders[camera].received.messages
        return all(key in got[n] for n in OUTPUTS)

    def wait_ready(self) -> None:
        ready = wait_for(
            lambda: (
                all(
                    self.cameras[c].publisher.get_subscription_count() > 0 and self.recorders[c].connected()
                    for c in CAMERAS
                )
                or self.process.poll() is not None
            ),
            READY_TIMEOUT,
        )
        assert ready and self.process.poll() is None, f"node did not start:\n{self.log.read_text()}"
        for camera in CAMERAS:  # probe until answered (matching is asymmetric, see test_node.py)
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline:
                key = self.cameras[camera].send(rgb_frame(32, 48, seed=1))
                if wait_for(lambda c=camera, k=key: self.answered(c, k), 3.0):
                    break
            else:
                raise AssertionError(f"{camera} never answered:\n{self.log.read_text()[-2000:]}")

    def statuses(self) -> dict[str, dict[str, str]]:
        """The node's latest status per camera name (its suffix in the status name)."""
        prefix = "/ns/panoptic_node: panoptic segmentation ("
        mine = [d for d in self.diagnostics if d.status and d.status[0].name.startswith(prefix)]
        assert mine, "no diagnostics from the node"
        return {s.name[len(prefix) : -1]: {kv.key: kv.value for kv in s.values} for s in mine[-1].status}

    def close(self) -> int:
        self.spinner.stop()
        for node in (*self.cameras.values(), *self.recorders.values()):
            node.destroy_node()
        return stop_node(self.process)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    context = rclpy.Context()
    rclpy.init(context=context)
    model_file = save_checkpoint(rigged_model(), tmp_path_factory.mktemp("cameras_model") / "rigged.pt")
    log = tmp_path_factory.mktemp("cameras_logs") / "node.log"
    r = CamerasRig(context, model_file, log)
    try:
        r.wait_ready()
        yield r
    finally:
        assert r.close() == 0, f"node did not exit cleanly:\n{log.read_text()[-2000:]}"
        rclpy.shutdown(context=context)
    assert "Traceback" not in log.read_text()


def test_each_camera_is_answered_on_its_own_outputs(rig):
    sizes = {"front": (120, 200), "rear": (96, 160)}
    keys = {c: rig.cameras[c].send(rgb_frame(*sizes[c], seed=k)) for k, c in enumerate(CAMERAS)}
    for camera in CAMERAS:
        assert wait_for(lambda c=camera: rig.answered(c, keys[c])), rig.log.read_text()[-2000:]
        got = rig.recorders[camera].received.messages
        for name in OUTPUTS:
            message = got[name][keys[camera]]
            assert message.header.frame_id == f"{camera}_camera"
            if name != "detections":
                assert (message.height, message.width) == sizes[camera], (camera, name)
        other = "rear" if camera == "front" else "front"
        assert keys[other] not in got["semantic"], "a camera's answer went to the other's topics"
    assert len(rig.recorders["front"].received.messages["detections"][keys["front"]].detections) > 0


def test_one_camera_alone_is_answered_without_the_other(rig):
    for _ in range(3):
        sent = time.monotonic()
        key = rig.cameras["rear"].send(rgb_frame(64, 96, seed=4))
        assert wait_for(lambda key=key: rig.answered("rear", key), 20.0)
        arrival = rig.recorders["rear"].received.arrival["semantic"][key]
        # It waited for the front camera at most batch_wait_ms, then went alone.
        assert arrival - sent < BATCH_WAIT_MS / 1000 + 10.0
        time.sleep(0.1)


def test_diagnostics_have_one_status_per_camera(rig):
    assert wait_for(lambda: rig.diagnostics and len(rig.statuses()) == 2, 5.0)
    before = rig.statuses()
    rig.cameras["front"].send(rgb_frame(64, 64, seed=2))
    assert wait_for(
        lambda: int(rig.statuses()["front"]["frames_out"]) > int(before["front"]["frames_out"]), 20.0
    )
    statuses = rig.statuses()
    assert set(statuses) == set(CAMERAS)
    for camera, values in statuses.items():
        assert values["camera"] == camera
        assert values["input_qos"] == "reliable (auto: 1 publisher, all reliable)", values
        for key in ("frames_in", "frames_out", "dropped", "rejected", "lost_in_transport", "latency_p50_ms"):
            assert key in values, key
        assert int(values["frames_out"]) >= 1 and int(values["rejected"]) == 0


def test_each_camera_has_its_label_info(rig):
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    for camera in CAMERAS:
        got: list[LabelInfo] = []
        recorder = rig.recorders[camera]
        subscription = recorder.create_subscription(LabelInfo, "panoptic/label_info", got.append, qos)
        try:
            assert wait_for(lambda got=got: got, 10.0), camera
            assert got[-1].class_map[-1].class_name == "unlabeled"
        finally:
            recorder.destroy_subscription(subscription)

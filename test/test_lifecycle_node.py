"""The lifecycle variant for real: its own process, driven through the lifecycle_msgs services.

One node process walks every transition (unconfigured -> inactive -> active -> inactive ->
unconfigured -> finalized, outputs checked in each); one shows a configure that fails.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import rclpy
from conftest import wait_for
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from std_msgs.msg import Header

from rt_panoptic_ros.ros.image_conversion import rgb_to_msg
from rt_panoptic_ros.ros.testing.harness import (
    CameraStream,
    OutputRecorder,
    Spinner,
    start_node,
    stop_node,
)

TIMEOUT = 90.0
OUTPUTS = ("semantic", "instance", "detections", "overlay")


class Driver:
    """A lifecycle node process, driven from here; a camera and a recorder to watch it."""

    def __init__(self, context, namespace: str, parameters: dict, log: Path) -> None:
        self.log = log
        self.process = start_node(parameters, {"__ns": namespace}, log, executable="panoptic_lifecycle_node")
        self.client_node = rclpy.create_node("lifecycle_driver", namespace=namespace, context=context)
        self.change = self.client_node.create_client(ChangeState, f"{namespace}/panoptic_node/change_state")
        self.get = self.client_node.create_client(GetState, f"{namespace}/panoptic_node/get_state")
        self.camera = CameraStream(namespace, frame_id="lifecycle_camera", context=context)
        self.recorder = OutputRecorder(namespace, context=context)
        self.spinner = Spinner(self.client_node, self.camera, self.recorder)
        assert self.get.wait_for_service(TIMEOUT) and self.change.wait_for_service(TIMEOUT), self.log_tail()

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:]

    def _call(self, client, request):
        future = client.call_async(request)
        assert wait_for(future.done, TIMEOUT), f"no reply from {client.srv_name}\n{self.log_tail()}"
        return future.result()

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def send(self) -> int:
        rgb = np.random.default_rng(len(self.camera.sent)).integers(0, 256, (40, 64, 3), dtype=np.uint8)
        return self.camera.send(rgb, rgb_to_msg(rgb, Header()))

    def answered(self, key: int, timeout: float) -> list[str]:
        """The outputs that arrive for frame ``key`` within ``timeout``."""
        got = self.recorder.received.messages
        wait_for(lambda: all(key in got[n] for n in OUTPUTS), timeout)
        return [n for n in OUTPUTS if key in got[n]]

    def wait_answered(self) -> None:
        """Probe frames until one comes back on every output (discovery is asymmetric)."""
        assert wait_for(self.recorder.connected, TIMEOUT), self.log_tail()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if len(self.answered(self.send(), 2.0)) == len(OUTPUTS):
                return
        raise AssertionError(f"the active node never answered a probe frame\n{self.log_tail()}")

    def close(self) -> int:
        self.spinner.stop()
        for node in (self.client_node, self.camera, self.recorder):
            node.destroy_node()
        return stop_node(self.process)


def test_every_transition(context, model_file, tmp_path):
    log = tmp_path / "lifecycle.log"
    driver = Driver(context, "/lc1", {"model": str(model_file), "backend": "torch"}, log)
    try:
        assert driver.state() == "unconfigured"
        assert driver.transition(Transition.TRANSITION_CONFIGURE), driver.log_tail()
        assert driver.state() == "inactive"
        # Inactive: the outputs exist, the input does not; a frame sent gets nothing.
        assert wait_for(driver.recorder.connected, TIMEOUT), driver.log_tail()
        assert driver.camera.publisher.get_subscription_count() == 0
        assert driver.answered(driver.send(), 2.0) == []

        assert driver.transition(Transition.TRANSITION_ACTIVATE)
        assert driver.state() == "active"
        assert driver.camera.wait_for_subscriber(TIMEOUT, driver.process), driver.log_tail()
        driver.wait_answered()
        assert driver.answered(driver.send(), 20.0) == list(OUTPUTS)

        assert driver.transition(Transition.TRANSITION_DEACTIVATE)
        assert driver.state() == "inactive"
        assert wait_for(lambda: driver.camera.publisher.get_subscription_count() == 0, 10.0)
        assert driver.answered(driver.send(), 2.0) == []

        assert driver.transition(Transition.TRANSITION_CLEANUP)
        assert driver.state() == "unconfigured"
        assert driver.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert driver.process.wait(timeout=30) == 0, driver.log_tail()
    finally:
        code = driver.close()
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text[-3000:]
    assert "MB before configure" in text and "MB after configure" in text, text[-3000:]


def test_a_failed_configure_stays_unconfigured_with_the_reason(context, tmp_path):
    log = tmp_path / "lifecycle_fail.log"
    driver = Driver(context, "/lc2", {"model": "/nonexistent.pt", "backend": "torch"}, log)
    try:
        assert not driver.transition(Transition.TRANSITION_CONFIGURE)
        assert driver.state() == "unconfigured"
        assert wait_for(lambda: "configure failed: model:" in log.read_text(), 5.0), driver.log_tail()
        line = next(x for x in log.read_text().splitlines() if "configure failed" in x)
        assert "nonexistent.pt" in line
        assert driver.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert driver.process.wait(timeout=30) == 0, driver.log_tail()
    finally:
        code = driver.close()
    assert code == 0 and "Traceback" not in log.read_text(), driver.log_tail()

"""A ``panoptic_lifecycle_node`` process driven through the real ``lifecycle_msgs`` services,
with a camera and a recorder to watch what it does in each state (tests and benchmarks)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from std_msgs.msg import Header

from rt_panoptic_ros.ros.image_conversion import rgb_to_msg
from rt_panoptic_ros.ros.outputs import OUTPUT_TOPICS
from rt_panoptic_ros.ros.testing.harness import CameraStream, OutputRecorder, Spinner, start_node, stop_node
from rt_panoptic_ros.ros.testing.waiting import wait_for

#: Seconds to wait for a service, a reply or a first answer (a cold start loads torch).
TIMEOUT = 90.0
OUTPUTS = tuple(OUTPUT_TOPICS)

__all__ = ["OUTPUTS", "TIMEOUT", "LifecycleDriver", "Transition"]


class LifecycleDriver:
    """A lifecycle node process in ``namespace``, driven from ``context``'s process.

    Args:
        parameters: the node's parameters (``-p name:=value``).
        log: file for the node's output.
        frame_size: ``(height, width)`` of the frames :meth:`send` publishes.
    """

    def __init__(
        self, context, namespace: str, parameters: dict, log: Path, frame_size: tuple[int, int] = (40, 64)
    ) -> None:
        self.log = log
        self.frame_size = frame_size
        self.process = start_node(parameters, {"__ns": namespace}, log, executable="panoptic_lifecycle_node")
        self.client_node = rclpy.create_node("lifecycle_driver", namespace=namespace, context=context)
        self.change = self.client_node.create_client(ChangeState, f"{namespace}/panoptic_node/change_state")
        self.get = self.client_node.create_client(GetState, f"{namespace}/panoptic_node/get_state")
        self.camera = CameraStream(namespace, frame_id="lifecycle_camera", context=context)
        self.recorder = OutputRecorder(namespace, context=context)
        self.spinner = Spinner(self.client_node, self.camera, self.recorder)
        if not (self.get.wait_for_service(TIMEOUT) and self.change.wait_for_service(TIMEOUT)):
            raise RuntimeError(f"no lifecycle services\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:]

    def _call(self, client, request):
        future = client.call_async(request)
        if not wait_for(future.done, TIMEOUT):
            raise RuntimeError(f"no reply from {client.srv_name}\n{self.log_tail()}")
        return future.result()

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def send(self) -> int:
        """One random frame of ``frame_size``; its stamp key."""
        rng = np.random.default_rng(len(self.camera.sent))
        rgb = rng.integers(0, 256, (*self.frame_size, 3), dtype=np.uint8)
        return self.camera.send(rgb, rgb_to_msg(rgb, Header()))

    def answered(self, key: int, timeout: float) -> list[str]:
        """The outputs that arrive for frame ``key`` within ``timeout``."""
        got = self.recorder.received.messages
        wait_for(lambda: all(key in got[n] for n in OUTPUTS), timeout)
        return [n for n in OUTPUTS if key in got[n]]

    def wait_answered(self) -> None:
        """Probe frames until one comes back on every output (discovery is asymmetric)."""
        if not wait_for(self.recorder.connected, TIMEOUT):
            raise RuntimeError(f"the recorder never matched the outputs\n{self.log_tail()}")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if len(self.answered(self.send(), 2.0)) == len(OUTPUTS):
                return
        raise RuntimeError(f"the active node never answered a probe frame\n{self.log_tail()}")

    def close(self) -> int:
        """Stop watching and stop the node process; its exit status."""
        self.spinner.stop()
        for node in (self.client_node, self.camera, self.recorder):
            node.destroy_node()
        return stop_node(self.process)

"""The panoptic node: camera images in, panoptic segmentation out (ROS 2, rclpy).

This file starts :class:`~rt_panoptic_ros.ros.panoptic_core.PanopticCore` (shared with the
lifecycle variant, ``lifecycle_node.py``) on a plain node, configured and listening at once.
The core only wires ROS to plain, separately tested pieces: the frame pipeline
(``pipeline.py``: keep-latest slot, convert / infer / publish stages on their own threads),
the output contract (``outputs.py``: topics, depth, result -> messages), parameters
(``parameters.py``), image conversions (``image_conversion.py``), statistics (``stats.py``),
the input QoS choice (``qos.py``, applied by ``node_input.py``), the transport-loss estimate
(``transport_stats.py``), the Fast DDS profile (``dds_profile.py``) and the
:class:`~rt_panoptic_ros.runtime.Predictor`.

Topics (relative, so namespaces and remapping work):

- in: ``image`` (``sensor_msgs/Image``) or, with ``compressed:=true``, ``image/compressed``;
- out: ``panoptic/semantic`` (mono8 class ids, 255 = void; mono16 for > 255 classes),
  ``panoptic/instance`` (mono16, 0 = none, k = detection ``id`` k),
  ``panoptic/detections`` (``vision_msgs/Detection2DArray``), ``panoptic/overlay`` (rgb8),
  and ``/diagnostics`` at 1 Hz.

With ``cameras: [front, rear]`` one node serves several cameras through one model: inputs
``front/image`` and ``rear/image``, outputs ``front/panoptic/*`` and ``rear/panoptic/*``
(``camera_io.py``), their newest frames batched into one network call (``pipeline.py``,
``batch_wait_ms``), one diagnostics status per camera.

Every output carries the input's header and size. Conversion, inference and publishing run on
their own threads behind a keep-latest slot and overlap across frames; outputs nobody
subscribes to are not computed. The input's reliability
follows the camera's (``qos_reliability:=auto``) and ``main`` gives the process the shipped
Fast DDS profile for large images before it creates its DDS participant.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from rt_panoptic_ros.allocator import keep_large_blocks
from rt_panoptic_ros.errors import first_line
from rt_panoptic_ros.ros.dds_profile import ProfileChoice, use_shipped_profile
from rt_panoptic_ros.ros.panoptic_core import NODE_NAME, PanopticCore, StartupError
from rt_panoptic_ros.ros.pipeline import FramePipeline

__all__ = ["NODE_NAME", "PanopticNode", "StartupError", "main"]


class PanopticNode(Node):
    """Real-time panoptic segmentation of a camera stream (configured and listening at once)."""

    def __init__(
        self, dds_profile: ProfileChoice | None = None, infer_in_caller: bool = False, **kwargs: Any
    ) -> None:
        """``dds_profile``: what :func:`main` chose for this process (``None``: hosted elsewhere).
        ``infer_in_caller``: :func:`main` runs inference in its own (main) thread, see ``pipeline.py``."""
        super().__init__(NODE_NAME, **kwargs)
        self.core = PanopticCore(self, dds_profile, infer_in_caller)
        listening = self.core.start()
        self.get_logger().info(f"ready: {self.core.describe}; {listening}")

    @property
    def pipeline(self) -> FramePipeline:
        return self.core.pipeline

    def shutdown(self) -> None:
        """Stop the pipeline's threads (their current step finishes, nothing more is published)."""
        self.core.shutdown()


def main(args: list[str] | None = None) -> int:
    """``panoptic_node``: run until Ctrl-C / SIGTERM; exit 1 with one line if it cannot start.

    Before ``rclpy.init`` creates the process's DDS participant, the shipped Fast DDS profile
    is given to it unless a profile is already set or ``RT_PANOPTIC_DDS_PROFILE=off``
    (``dds_profile.py``). The main thread runs inference (``pipeline.py``); ROS callbacks are
    spun on another thread.
    """
    profile = use_shipped_profile()
    keep_large_blocks()
    try:
        rclpy.init(args=args)
    except RCLError as error:  # rcl's own argument parsing: a bad --params-file, "-p name"
        print(f"[{NODE_NAME}] error: ROS arguments: {first_line(error)}", file=sys.stderr)
        return 1
    node, spinner = None, None
    try:
        node = PanopticNode(dds_profile=profile, infer_in_caller=True)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=_spin, args=(executor, node), name="ros-spin", daemon=True)
        spinner.start()
        node.pipeline.run_inference()  # until the spinner stops the pipeline
    except StartupError as error:
        print(f"[{NODE_NAME}] error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # In this order: no more frames, the context down (which ends the spinner's executor),
        # the spinner joined, and only then the node destroyed, so that no thread is still in
        # rclpy when the interpreter exits. (A node stopped on a loaded machine once aborted with
        # "terminate called without an active exception"; the node used to be destroyed while
        # the spinner could still be inside rclpy, the likely cause. Not reproduced since.)
        if node is not None:
            node.shutdown()
        if rclpy.ok():
            rclpy.shutdown()
        if spinner is not None:
            spinner.join(timeout=10.0)
        if node is not None:
            node.destroy_node()
    return 0


def _spin(executor: SingleThreadedExecutor, node: PanopticNode) -> None:
    """ROS callbacks until shutdown (Ctrl-C, SIGTERM); then stop the node's pipeline."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()


if __name__ == "__main__":
    sys.exit(main())

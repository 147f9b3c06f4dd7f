"""The panoptic node as a managed (lifecycle) node: started, paused and stopped by transitions.

Same name (``panoptic_node``), parameters and topics as ``node.py``; both are wired by
:class:`~rt_panoptic_ros.ros.panoptic_core.PanopticCore`. The transitions
(``ros2 lifecycle set /panoptic_node configure`` and so on):

- configure: declare and check the parameters, load and warm up the model, create the output
  publishers and the frame pipeline; no frames are taken yet. A bad model or parameter fails the
  transition (the node stays unconfigured) with the reason in one log line.
- activate: subscribe to the input (reliability following the camera's) and start the
  diagnostics; outputs are published.
- deactivate: the subscription goes, a frame in flight is dropped, nothing is inferred.
- cleanup: join the pipeline's threads and let go of the model (memory measured in the log).
- shutdown (from any state): as cleanup, then the process exits 0.

The outputs are plain publishers that only the core publishes to, and only while active: a
lifecycle publisher would warn for every message of a frame that was in flight at deactivate,
and the output contract (``outputs.py``, "skip outputs nobody subscribes to") stays the one the
plain node has. Inference runs on the pipeline's own thread here, not the main one (a node
configured again gets a new pipeline; ``pipeline.py`` gives the cost).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from rt_panoptic_ros.allocator import keep_large_blocks
from rt_panoptic_ros.errors import first_line
from rt_panoptic_ros.ros.dds_profile import ProfileChoice, use_shipped_profile
from rt_panoptic_ros.ros.panoptic_core import (
    NODE_NAME,
    PanopticCore,
    StartupError,
    release_memory,
)
from rt_panoptic_ros.runtime.machine import rss_mb

#: Seconds the process keeps spinning after shutdown, so the transition's reply goes out.
LINGER_S = 0.5


class PanopticLifecycleNode(LifecycleNode):
    """Real-time panoptic segmentation of a camera stream, driven by lifecycle transitions."""

    def __init__(self, dds_profile: ProfileChoice | None = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.dds_profile = dds_profile
        self.core: PanopticCore | None = None
        self.finished = False  # shut down: main() may end the process
        self._rss_before = self._rss_configured = 0.0  # MB, for the log

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._rss_before = rss_mb()
        try:
            self.core = PanopticCore(self, self.dds_profile)
        except StartupError as error:
            self.get_logger().error(f"configure failed: {error}")
            release_memory()
            return TransitionCallbackReturn.FAILURE
        except Exception as error:  # a backend that fails at warm-up: still one line
            self.get_logger().error(f"configure failed: {type(error).__name__}: {first_line(error)}")
            release_memory()
            return TransitionCallbackReturn.FAILURE
        self._rss_configured = rss_mb()
        self.get_logger().info(
            f"configured: {self.core.describe}; RSS {self._rss_before:.0f} MB before configure, "
            f"{self._rss_configured:.0f} MB after"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().info(f"active: {self.core.start()}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.stop()
        self.get_logger().info("inactive: taking no frames")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release("cleaned up")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release("shut down")
        self.finished = True
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release("error")
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured

    def _release(self, what: str) -> None:
        """Close the core (threads joined), collect it and log the memory it gave back."""
        if self.core is None:
            self.get_logger().info(what)
            return
        self.core.close()
        self.core = None
        release_memory()
        self.get_logger().info(
            f"{what}: model and pipeline released; RSS {self._rss_before:.0f} MB before configure, "
            f"{self._rss_configured:.0f} MB after configure, {rss_mb():.0f} MB now"
        )


def main(args: list[str] | None = None) -> int:
    """``panoptic_lifecycle_node``: starts unconfigured; runs until shutdown, Ctrl-C or SIGTERM.

    Exit 0 after the shutdown transition or a signal; 1 with one line for bad ROS arguments.
    The shipped Fast DDS profile is applied before ``rclpy.init``, as ``node.py`` does.
    """
    profile = use_shipped_profile()
    keep_large_blocks()
    try:
        rclpy.init(args=args)
    except RCLError as error:
        print(f"[{NODE_NAME}] error: ROS arguments: {first_line(error)}", file=sys.stderr)
        return 1
    node = PanopticLifecycleNode(dds_profile=profile)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not node.finished:
            executor.spin_once(timeout_sec=0.2)
        linger = time.monotonic() + LINGER_S
        while time.monotonic() < linger:
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.core is not None:
            node.core.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

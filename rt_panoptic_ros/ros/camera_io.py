"""One camera's ROS side in the panoptic node: its input, its outputs and its diagnostics status.

A node serves one camera (parameter ``cameras`` empty: input ``image``, outputs ``panoptic/*``
in the node's namespace) or several (``cameras: [front, rear]``: inputs ``front/image`` and
``rear/image``, outputs ``front/panoptic/*`` and ``rear/panoptic/*``). Every name is relative,
so namespaces and remapping work as for one camera. Each camera has its own input whose QoS
follows that camera (``node_input.FollowingInput``), its own publishers (the four outputs and
the latched ``label_info``) and its own ``DiagnosticStatus``; the network is shared
(``pipeline.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import LabelInfo

from rt_panoptic_ros.ros.messages import status_msg
from rt_panoptic_ros.ros.node_input import FollowingInput
from rt_panoptic_ros.ros.outputs import LABEL_INFO_TOPIC, OUTPUT_TOPICS
from rt_panoptic_ros.ros.pipeline import STAGES, CameraCounters, FramePipeline
from rt_panoptic_ros.ros.qos import BEST_EFFORT, BEST_EFFORT_HINT


class CameraIO:
    """Subscription and publishers of camera ``name`` (``""``: the node's single input).

    The subscription exists between :meth:`open` and :meth:`close`; the publishers until
    :meth:`destroy`.
    """

    def __init__(
        self, node: Node, name: str, compressed: bool, reliability: str, depth: int,
        outputs: QoSProfile, on_frame: Callable[[str, Any], None],
    ) -> None:  # fmt: skip
        self.node, self.name = node, name
        prefix = f"{name}/" if name else ""
        self.publishers = {
            output: node.create_publisher(kind, prefix + topic, outputs)
            for output, (topic, kind) in OUTPUT_TOPICS.items()
        }
        latched = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )  # fmt: skip
        self.label_info_pub = node.create_publisher(LabelInfo, prefix + LABEL_INFO_TOPIC, latched)
        self.input = FollowingInput(
            node, prefix + ("image/compressed" if compressed else "image"),
            CompressedImage if compressed else Image, reliability, depth,
            lambda message: on_frame(name, message),
        )  # fmt: skip

    def wanted(self, overlay: bool) -> list[str]:
        """The outputs someone subscribes to now (the overlay only if ``overlay``)."""
        return [
            output
            for output, publisher in self.publishers.items()
            if publisher.get_subscription_count() > 0 and (output != "overlay" or overlay)
        ]

    def open(self) -> str:
        return self.input.open()

    def close(self) -> None:
        self.input.close()

    def destroy(self) -> None:
        """:meth:`close`, and the publishers go."""
        self.close()
        for publisher in (*self.publishers.values(), self.label_info_pub):
            self.node.destroy_publisher(publisher)
        self.publishers = {}


def camera_status(
    camera: CameraIO, pipeline: FramePipeline, hardware_id: str, common: Mapping[str, object]
) -> DiagnosticStatus:
    """``camera``'s diagnostics: its own counters and QoS, then the node-wide ``common`` values.

    The status is named ``<node>: panoptic segmentation``, with `` (<camera>)`` for a named one.
    """
    source = camera.input
    counters: CameraCounters = pipeline.cameras[camera.name]
    rejected, lost = counters.rejected, source.transport.lost
    problems = []
    if rejected:
        problems.append(f"{rejected} frame(s) rejected since start")
    if lost:
        problems.append(f"~{lost} frame(s) lost in transport since start (gaps in the camera's stamps)")
    if source.dds_lost:
        problems.append(f"{source.dds_lost} sample(s) lost by DDS since start")
    if source.qos is not None and (lost or source.dds_lost) and source.qos.reliability == BEST_EFFORT:
        problems.append(BEST_EFFORT_HINT)
    if source.qos is not None and source.qos.warning:
        problems.append(source.qos.warning)
    level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
    values = {
        "camera": camera.name,
        "input_rate_hz": source.rate.rate(),
        "output_rate_hz": counters.output_rate.rate(),
        "latency_p50_ms": counters.latency.percentile(50),
        "latency_p90_ms": counters.latency.percentile(90),
        **{f"{stage}_p50_ms": pipeline.stage_times[stage].percentile(50) for stage in STAGES},
        "batch_size_p50": pipeline.batch_sizes.percentile(50),
        "live_tracks": len(tracker.tracks) if (tracker := pipeline.trackers.get(camera.name)) else 0,
        "frames_in": source.frames_in,
        "frames_out": counters.frames_out,
        "dropped": pipeline.slot.dropped[camera.name],
        "rejected": rejected,
        "lost_in_transport": lost,
        "dds_samples_lost": source.dds_lost,
        "input_period_ms": source.transport.period_ms(),
        "input_qos": source.qos.describe() if source.qos is not None else "not subscribed",
        "input_publishers": source.publishers,
        **common,
    }
    name = f"{camera.node.get_fully_qualified_name()}: panoptic segmentation"
    if camera.name:
        name += f" ({camera.name})"
    return status_msg(name, hardware_id, level, "; ".join(problems) or "running", values)

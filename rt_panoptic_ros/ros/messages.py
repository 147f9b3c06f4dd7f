"""Detections, label info and diagnostics as ROS messages: plain functions, tested without a node."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, LabelInfo, ObjectHypothesisWithPose, VisionClass

from rt_panoptic_ros.panoptic import InstanceSegment


def stamp_ns(header: Header) -> int:
    """A header's stamp in nanoseconds: a frame's identity across topics, and the trackers' clock."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def detections_msg(header: Header, segments: Sequence[InstanceSegment]) -> Detection2DArray:
    """One ``Detection2D`` per instance, with the input's header.

    Each detection: ``id`` = the instance's value in ``panoptic/instance`` (as a string),
    ``bbox`` = its tight box in pixels (centre and size), one result whose
    ``hypothesis.class_id`` is the semantic class id (as a string, the value it has in
    ``panoptic/semantic``; names are in the node's ``class_names`` parameter) and
    ``hypothesis.score`` the detection score.
    """
    array = Detection2DArray(header=header)
    for s in segments:
        x1, y1, x2, y2 = s.bbox
        detection = Detection2D(header=header, id=str(s.id))
        detection.bbox.center.position.x = (x1 + x2) / 2.0
        detection.bbox.center.position.y = (y1 + y2) / 2.0
        detection.bbox.size_x = float(x2 - x1)
        detection.bbox.size_y = float(y2 - y1)
        result = ObjectHypothesisWithPose()
        result.hypothesis.class_id = str(s.category_id)
        result.hypothesis.score = float(s.score)
        detection.results.append(result)
        array.detections.append(detection)
    return array


def label_info_msg(header: Header, class_names: Sequence[str], void: int, threshold: float) -> LabelInfo:
    """``vision_msgs/LabelInfo``: what the ids in ``panoptic/semantic`` and in the detections'
    ``class_id`` mean.

    ``class_map`` holds every class id with its name, plus ``void`` (the id of pixels no class
    was given, 255 in a mono8 semantic image) as ``"unlabeled"``, the name vision_msgs gives the
    maximum id. ``threshold``: the score an instance needs to be kept
    (``decoder.instance_score_thresh``).
    """
    class_map = [VisionClass(class_id=k, class_name=name) for k, name in enumerate(class_names)]
    class_map.append(VisionClass(class_id=void, class_name="unlabeled"))
    return LabelInfo(header=header, class_map=class_map, threshold=float(threshold))


def diagnostics_msg(
    header: Header, name: str, hardware_id: str, level: bytes, message: str, values: Mapping[str, object]
) -> DiagnosticArray:
    """A ``DiagnosticArray`` with one status (``values`` rendered as strings)."""
    return DiagnosticArray(header=header, status=[status_msg(name, hardware_id, level, message, values)])


def status_msg(
    name: str, hardware_id: str, level: bytes, message: str, values: Mapping[str, object]
) -> DiagnosticStatus:
    """One ``DiagnosticStatus`` (``values`` rendered as strings, floats with two decimals)."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=k, value=_format(v)) for k, v in values.items()]
    return status


def _format(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)

"""Detections and diagnostics as ROS messages: plain functions, tested without a node."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from rt_panoptic_ros.panoptic import Segment


def detections_msg(header: Header, segments: Sequence[Segment]) -> Detection2DArray:
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


def diagnostics_msg(
    header: Header, name: str, hardware_id: str, level: bytes, message: str, values: Mapping[str, object]
) -> DiagnosticArray:
    """A ``DiagnosticArray`` with one status (``values`` rendered as strings)."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=k, value=_format(v)) for k, v in values.items()]
    return DiagnosticArray(header=header, status=[status])


def _format(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)

"""The vision_msgs that ``make setup`` builds (test/interfaces/vision_msgs) are the upstream ones.

The messages are built by the real rosidl tool-chain into the venv, so these tests import the
generated Python types, serialise through the generated C type support, and compare with the
upstream package (ros-perception/vision_msgs, branch ros2, 4.1.1) in two ways: the field
names and types as rosidl reports them, and the RIHS01 type hashes, which cover every field's
name and type down through the nested messages (not the comments). The expected hashes are
those of a build of the upstream package's own .msg files with the same tool-chain; a
publisher built here with another hash would not talk to a robot's Detection2DArray.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rclpy
import vision_msgs
from rclpy.context import Context
from rclpy.serialization import deserialize_message, serialize_message
from vision_msgs import msg as vm

#: rosidl's view of upstream vision_msgs 4.1.1, message by message (field order matters).
UPSTREAM_FIELDS = {
    "Point2D": {"x": "double", "y": "double"},
    "Pose2D": {"position": "vision_msgs/Point2D", "theta": "double"},
    "BoundingBox2D": {"center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"},
    "ObjectHypothesis": {"class_id": "string", "score": "double"},
    "ObjectHypothesisWithPose": {
        "hypothesis": "vision_msgs/ObjectHypothesis",
        "pose": "geometry_msgs/PoseWithCovariance",
    },
    "Detection2D": {
        "header": "std_msgs/Header",
        "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
        "bbox": "vision_msgs/BoundingBox2D",
        "id": "string",
    },
    "Detection2DArray": {"header": "std_msgs/Header", "detections": "sequence<vision_msgs/Detection2D>"},
    "VisionClass": {"class_id": "uint16", "class_name": "string"},
    "LabelInfo": {
        "header": "std_msgs/Header",
        "class_map": "sequence<vision_msgs/VisionClass>",
        "threshold": "float",
    },
}

#: RIHS01 type hashes of upstream vision_msgs 4.1.1 (its msg/ folder built with rosidl 4.9.5).
UPSTREAM_HASHES = {
    "Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    # Built here from the upstream 4.1.1 fields (names, types, order) by the rosidl that
    # reproduces the seven hashes above; no upstream build of these two could be consulted.
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
}

#: The interface files beside the Python package: <prefix>/lib/pythonX.Y/site-packages/vision_msgs
#: -> <prefix>/share/vision_msgs (the venv after ``make setup``, /opt/ros/<distro> on a robot).
SHARE = Path(vision_msgs.__file__).resolve().parents[4] / "share" / "vision_msgs"
#: The definitions kept in the repo.
DEFINITIONS = Path(__file__).resolve().parent / "interfaces" / "vision_msgs" / "msg"


def one_detection_array() -> vm.Detection2DArray:
    """A Detection2DArray as the node publishes it: one car, box in pixels, id "1"."""
    array = vm.Detection2DArray()
    array.header.stamp.sec = 1_700_000_000
    array.header.stamp.nanosec = 123_456_789
    array.header.frame_id = "camera_optical"
    detection = vm.Detection2D()
    detection.header = array.header
    detection.bbox.center.position.x = 320.5
    detection.bbox.center.position.y = 200.25
    detection.bbox.center.theta = 0.0
    detection.bbox.size_x = 64.0
    detection.bbox.size_y = 48.0
    hypothesis = vm.ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = "13"
    hypothesis.hypothesis.score = 0.875
    detection.results = [hypothesis]
    detection.id = "1"
    array.detections = [detection]
    return array


def test_detection_array_round_trips_through_cdr():
    sent = one_detection_array()
    data = serialize_message(sent)
    # Header (stamp 8 + frame_id), a sequence of one detection: real CDR bytes, not a pickle.
    assert isinstance(data, bytes) and len(data) > 100
    received = deserialize_message(data, vm.Detection2DArray)
    assert received == sent
    detection = received.detections[0]
    assert (detection.bbox.center.position.x, detection.bbox.center.position.y) == (320.5, 200.25)
    assert (detection.bbox.size_x, detection.bbox.size_y) == (64.0, 48.0)
    assert detection.results[0].hypothesis.class_id == "13"
    assert detection.results[0].hypothesis.score == 0.875
    assert detection.id == "1"
    assert received.header.frame_id == "camera_optical"
    assert received.header.stamp.nanosec == 123_456_789


def test_round_trip_can_fail():
    """The comparison above sees a changed field (so it is not trivially true)."""
    sent = one_detection_array()
    received = deserialize_message(serialize_message(sent), vm.Detection2DArray)
    received.detections[0].results[0].hypothesis.score = 0.5
    assert received != sent


@pytest.mark.parametrize("name", sorted(UPSTREAM_FIELDS))
def test_fields_match_upstream(name):
    fields = getattr(vm, name).get_fields_and_field_types()
    assert list(fields.items()) == list(UPSTREAM_FIELDS[name].items())


@pytest.mark.parametrize("name", sorted(UPSTREAM_HASHES))
def test_type_hashes_match_upstream(name):
    description = json.loads((SHARE / "msg" / f"{name}.json").read_text())
    own = description["type_hashes"][0]
    assert own["type_name"] == f"vision_msgs/msg/{name}"
    assert own["hash_string"] == UPSTREAM_HASHES[name]


def test_the_repo_keeps_its_messages_and_they_are_installed():
    assert sorted(p.stem for p in DEFINITIONS.glob("*.msg")) == sorted(UPSTREAM_FIELDS)
    assert set(UPSTREAM_FIELDS) <= {p.stem for p in (SHARE / "msg").glob("*.msg")}


def test_publisher_announces_the_upstream_type(monkeypatch):
    """The generated C type support carries the upstream hash onto the ROS graph."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("vision_msgs_type_check", context=context)
        node.create_publisher(vm.Detection2DArray, "detections_type_check", 1)
        infos = [i for i in node.get_publishers_info_by_topic("detections_type_check")
                 if i.node_name == "vision_msgs_type_check"]  # fmt: skip
        assert len(infos) == 1
        assert infos[0].topic_type == "vision_msgs/msg/Detection2DArray"
        assert str(infos[0].topic_type_hash) == UPSTREAM_HASHES["Detection2DArray"]
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)

"""Live replay files: the bag-replay preset and the RViz layout agree with the node and the bag tool."""

from __future__ import annotations

from pathlib import Path

import yaml

from rt_panoptic_ros.ros.bag.processing import output_topics
from rt_panoptic_ros.ros.parameters import check_value, node_parameters

CONFIG = Path(__file__).resolve().parents[1] / "config"


def test_bag_replay_preset_is_a_valid_node_parameter_file():
    from rt_panoptic_ros.config import preset

    document = yaml.safe_load((CONFIG / "bag_replay.yaml").read_text())
    parameters = document["/**"]["ros__parameters"]
    specs = {s.name: s for s in node_parameters(preset("small_cityscapes").decoder)}
    unknown = set(parameters) - set(specs) - {"use_sim_time"}  # use_sim_time: every rclpy node has it
    assert not unknown, unknown
    for name, value in parameters.items():
        if name in specs:
            assert check_value(specs[name], value) is None, (name, value)
    # What replay needs: the bag's clock, and no frame lost in transport (auto: reliable when
    # the player publishes reliably, as it does with the README's QoS override).
    assert parameters["use_sim_time"] is True
    assert parameters["qos_reliability"] in ("reliable", "auto")


def test_rviz_layout_shows_camera_and_overlay_side_by_side():
    config = yaml.safe_load((CONFIG / "panoptic.rviz").read_text())
    displays = {d["Name"]: d for d in config["Visualization Manager"]["Displays"]}
    assert {d["Class"] for d in displays.values()} == {"rviz_default_plugins/Image"}
    camera, overlay = displays["Camera"]["Topic"]["Value"], displays["Panoptic overlay"]["Topic"]["Value"]
    # The overlay is where the node in the camera's namespace (and rt-panoptic-bag) puts it.
    assert overlay == output_topics(camera, compressed=False, overlay=True)["overlay"]
    assert all(d["Enabled"] and d["Topic"]["Reliability Policy"] == "Reliable" for d in displays.values())

    geometry = config["Window Geometry"]
    state = bytes.fromhex(geometry["QMainWindow State"])
    assert state[:4] == b"\x00\x00\x00\xff"  # QMainWindow::saveState's marker
    for name in ("Displays", "Camera", "Panoptic overlay"):  # docks are restored by object name
        assert name.encode("utf-16-be") in state, name
        assert geometry[name] == {"collapsed": False}
    # Both image docks in one horizontally split area: "Camera" directly followed by the overlay.
    camera_at = state.index("Camera".encode("utf-16-be"))
    assert camera_at < state.index("Panoptic overlay".encode("utf-16-be")) < camera_at + 64

"""The plain parts behind large images over DDS, without ROS: the input QoS choice, the Fast DDS
profile choice, and the shipped profile itself (the transport-loss estimate: test_transport_stats.py)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from rt_panoptic_ros.ros.dds_profile import (
    PROFILE_NAME,
    ProfileChoice,
    choose_profile,
    profile_candidates,
    shipped_profile_path,
    use_shipped_profile,
    without_profile,
)
from rt_panoptic_ros.ros.qos import choose_input_qos

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / PROFILE_NAME

# --- input QoS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("publishers", "current", "reliability", "reason"),
    [
        (["reliable"], None, "reliable", "auto: 1 publisher, all reliable"),
        (["reliable", "reliable"], "best_effort", "reliable", "auto: 2 publishers, all reliable"),
        (["best_effort"], None, "best_effort", "auto: 1 of 1 publisher best effort"),
        (["reliable", "best_effort"], "reliable", "best_effort", "auto: 1 of 2 publishers best effort"),
        (["unknown"], None, "best_effort", "auto: 1 of 1 publisher best effort"),
        ([], None, "reliable", "auto: no publisher"),  # start-up: most cameras and bags are reliable
        ([], "best_effort", "best_effort", "auto: no publisher"),  # a restarting camera is heard at once
    ],
)
def test_auto_follows_the_publishers(publishers, current, reliability, reason):
    choice = choose_input_qos("auto", publishers, current)
    assert (choice.reliability, choice.reason, choice.warning) == (reliability, reason, None)
    assert (choice.hint is not None) == (reliability == "best_effort" and bool(publishers))


def test_explicit_settings_stay_and_warn_on_a_mismatch():
    reliable = choose_input_qos("reliable", ["best_effort", "reliable"])
    assert reliable.reliability == "reliable"
    assert "1 of 2 publishers publish best effort: they cannot connect" in reliable.warning
    best_effort = choose_input_qos("best_effort", ["reliable"])
    assert best_effort.reliability == "best_effort"
    assert "large frames are lost" in best_effort.warning
    assert choose_input_qos("reliable", ["reliable"]).warning is None
    assert choose_input_qos("best_effort", ["best_effort"]).warning is None
    assert choose_input_qos("best_effort", []).warning is None
    with pytest.raises(ValueError, match="'fast' is not one of auto, best_effort, reliable"):
        choose_input_qos("fast", [])


def test_describe_is_one_line():
    assert choose_input_qos("auto", ["reliable"]).describe() == "reliable (auto: 1 publisher, all reliable)"


# --- the Fast DDS profile ----------------------------------------------------------------------


def test_profile_choice(tmp_path):
    shipped = PROFILE
    assert choose_profile({}, shipped, tmp_path).source == "shipped"
    assert choose_profile({}, shipped, tmp_path).path == str(shipped)
    mine = {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_dds.xml"}
    assert (choose_profile(mine, shipped, tmp_path).source, choose_profile(mine, shipped, tmp_path).path) == (
        "user",
        "/etc/my_dds.xml",
    )
    legacy = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/old.xml"}
    assert choose_profile(legacy, shipped, tmp_path).source == "user"
    (tmp_path / "DEFAULT_FASTDDS_PROFILES.xml").write_text("<dds/>")
    assert choose_profile({}, shipped, tmp_path).source == "user"
    (tmp_path / "DEFAULT_FASTDDS_PROFILES.xml").unlink()
    for off in ("off", "OFF", "0", "false", "none"):
        assert choose_profile({"RT_PANOPTIC_DDS_PROFILE": off}, shipped, tmp_path).source == "off"
    assert choose_profile({"RT_PANOPTIC_DDS_PROFILE": "on"}, shipped, tmp_path).source == "shipped"
    assert choose_profile({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, shipped, tmp_path).path is None
    assert choose_profile({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}, shipped, tmp_path).source == "shipped"
    assert choose_profile({}, None, tmp_path).source == "missing"
    # set by a parent process that applied ours: still ours
    inherited = {"FASTDDS_DEFAULT_PROFILES_FILE": str(shipped)}
    assert choose_profile(inherited, shipped, tmp_path).source == "shipped"
    for source in ("shipped", "user", "off", "other middleware", "missing"):
        text = ProfileChoice(str(shipped), source).describe()
        assert text and "\n" not in text


def test_use_shipped_profile_sets_the_variable_only_when_it_applies():
    environ: dict[str, str] = {}
    choice = use_shipped_profile(environ)
    assert choice.shipped and environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(PROFILE.resolve())
    environ = {"RT_PANOPTIC_DDS_PROFILE": "off"}
    assert use_shipped_profile(environ).source == "off" and "FASTDDS_DEFAULT_PROFILES_FILE" not in environ
    environ = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/old.xml"}
    assert use_shipped_profile(environ).source == "user" and "FASTDDS_DEFAULT_PROFILES_FILE" not in environ
    stripped = without_profile(
        {"FASTDDS_DEFAULT_PROFILES_FILE": "x", "FASTRTPS_DEFAULT_PROFILES_FILE": "y", "A": "1"}
    )
    assert stripped == {"A": "1", "RT_PANOPTIC_DDS_PROFILE": "off"}


def test_profile_is_found_in_the_source_tree_and_where_it_is_installed(tmp_path, monkeypatch):
    assert shipped_profile_path() == PROFILE.resolve()
    assert Path(sys.prefix) / "share" / "rt_panoptic_ros" / "config" / PROFILE_NAME in profile_candidates()
    # installed (colcon, pip --prefix): <prefix>/lib/pythonX.Y/site-packages/rt_panoptic_ros/ros/
    prefix = tmp_path / "install"
    module = prefix / "lib" / "python3.11" / "site-packages" / "rt_panoptic_ros" / "ros" / "dds_profile.py"
    installed = prefix / "share" / "rt_panoptic_ros" / "config" / PROFILE_NAME
    for path in (module, installed):
        path.parent.mkdir(parents=True)
        path.write_text("")
    candidates = profile_candidates(module)
    assert candidates[-2:] == [
        installed,
        prefix / "lib" / "python3.11" / "site-packages" / "config" / PROFILE_NAME,
    ]
    assert shipped_profile_path([c for c in candidates if tmp_path in c.parents]) == installed
    # the ament index (ros2 run / ros2 launch after colcon build) comes first
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "rt_panoptic_ros").write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert shipped_profile_path() == installed


def test_shipped_profile_holds_large_images():
    """SHM + UDPv4 user transports, builtin ones off, a segment for several 1024×2048 rgb8 frames."""
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(PROFILE).getroot()
    assert root.tag == "{http://www.eprosima.com}dds"
    transports = {
        t.findtext("d:transport_id", namespaces=ns): t
        for t in root.iterfind("d:profiles/d:transport_descriptors/d:transport_descriptor", ns)
    }
    kinds = {t.findtext("d:type", namespaces=ns): t for t in transports.values()}
    assert set(kinds) == {"SHM", "UDPv4"}
    frame = 1024 * 2048 * 3
    shm = kinds["SHM"]
    assert int(shm.findtext("d:segment_size", namespaces=ns)) >= 5 * frame
    assert (
        frame
        < int(shm.findtext("d:maxMessageSize", namespaces=ns))
        <= int(shm.findtext("d:segment_size", namespaces=ns))
    )
    participants = root.findall("d:profiles/d:participant", ns)
    assert len(participants) == 1 and participants[0].get("is_default_profile") == "true"
    rtps = participants[0].find("d:rtps", ns)
    assert rtps.findtext("d:useBuiltinTransports", namespaces=ns) == "false"
    used = [t.text for t in rtps.iterfind("d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(transports)


def test_presets_and_launch_file_follow_the_camera():
    for name in ("demo_cpu.yaml", "tri_cityscapes_gpu.yaml", "bag_replay.yaml"):
        parameters = yaml.safe_load((ROOT / "config" / name).read_text())["/**"]["ros__parameters"]
        assert parameters["qos_reliability"] == "auto", name
        assert parameters["output_reliability"] == "reliable", name
    launch = (ROOT / "launch" / "panoptic.launch.py").read_text()
    assert '"dds_profile"' in launch and "RT_PANOPTIC_DDS_PROFILE" in launch

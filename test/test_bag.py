"""rt-panoptic-bag on real rosbag2 files: bags written by rosbags, outputs read back.

The input bags are written entirely by ``rosbags`` (its own message classes and CDR
serialiser), in both storage formats, with rgb8, bgr8 and mono8 ``Image`` frames and JPEG
``CompressedImage`` frames, so the tool's rclpy deserialisation is checked against an
independent encoder. The expected maps come from the Predictor on pictures decoded
independently of the tool. Most runs call ``bag_main`` in this process (the same code as the
console script, without paying for start-up each time); Ctrl-C is tested on a real process.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import vision_msgs
import yaml
from conftest import rigged_model, small_tmpfs
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from rt_panoptic_ros.cli import bag_main
from rt_panoptic_ros.model import save_checkpoint
from rt_panoptic_ros.ros.bag.processing import output_topics
from rt_panoptic_ros.ros.bag.storage import _REPO_VISION_MSGS, output_typestore, vision_msgs_definitions
from rt_panoptic_ros.ros.messages import detections_msg
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.tracking import PanopticTracker

STORE = get_typestore(Stores.ROS2_KILTED)  # rosbags' own message classes, not rclpy's
T0 = 1_700_000_000 * 10**9  # header stamp of the first frame (ns)
BAG_DELAY = 5_000_000  # bag time = header stamp + 5 ms (recorded after capture), so they differ
PERIOD = 100_000_000  # 10 Hz
H, W = 64, 128
ENCODINGS = ("rgb8", "bgr8", "mono8")
FRAMES = 6  # two of each encoding on the raw topic; as many JPEG frames on the compressed one
#: Upstream vision_msgs 4.1.1 Detection2DArray (test_vision_msgs.py has them all).
DETECTION2DARRAY_HASH = "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968"
STORAGE = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
OUTPUTS = ("semantic", "instance", "detections")


# --- writing input bags with rosbags ----------------------------------------------------------


def header(k: int, frame_id: str = "cam_optical"):
    stamp = T0 + k * PERIOD
    Time, Header = STORE.types["builtin_interfaces/msg/Time"], STORE.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)


def gray_of(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def raw_image(k: int, rgb: np.ndarray, encoding: str) -> bytes:
    """CDR of a ``sensor_msgs/Image`` holding ``rgb`` in ``encoding``, by rosbags' serialiser."""
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": gray_of(rgb)}[encoding]
    pixels = np.ascontiguousarray(pixels)
    msg = STORE.types["sensor_msgs/msg/Image"](
        header=header(k), height=H, width=W, encoding=encoding, is_bigendian=0,
        step=pixels.strides[0], data=pixels.reshape(-1),
    )  # fmt: skip
    return STORE.serialize_cdr(msg, "sensor_msgs/msg/Image").tobytes()


def raw_jpeg(k: int, jpeg: np.ndarray) -> bytes:
    msg = STORE.types["sensor_msgs/msg/CompressedImage"](header=header(k), format="jpeg", data=jpeg)
    return STORE.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage").tobytes()


def expected_rgb(encoding: str, rgb: np.ndarray, jpeg: np.ndarray) -> np.ndarray:
    """What the camera's picture is after its encoding, decoded here without the tool's code."""
    if encoding == "mono8":
        return np.repeat(gray_of(rgb)[..., None], 3, axis=2)
    if encoding == "jpeg":
        return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]
    return rgb


def write_bag(path: Path, storage: str, topics: dict[str, tuple[str, list[bytes]]]) -> list[int]:
    """A bag of ``topic -> (type, raw messages)``, message k at bag time T0 + k/10 s + 5 ms."""
    with Writer(path, version=9, storage_plugin=STORAGE[storage]) as writer:
        connections = {
            t: writer.add_connection(t, msgtype, typestore=STORE) for t, (msgtype, _) in topics.items()
        }
        for topic, (_, messages) in topics.items():
            for k, raw in enumerate(messages):
                writer.write(connections[topic], T0 + k * PERIOD + BAG_DELAY, raw)
    return [T0 + k * PERIOD + BAG_DELAY for k in range(max(len(m) for _, m in topics.values()))]


@pytest.fixture(scope="module")
def pictures():
    """FRAMES random pictures, each with its encoding on the raw topic and its JPEG bytes."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(FRAMES):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        rgb = cv2.GaussianBlur(rgb, (5, 5), 0)  # smoother pictures keep JPEG close to them
        ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1])
        assert ok
        out.append((rgb, ENCODINGS[k % len(ENCODINGS)], jpeg.reshape(-1)))
    return out


@pytest.fixture(scope="module")
def bags(pictures, tmp_path_factory):
    """One input bag per storage format: /cam/image (raw), /cam/image/compressed, /chatter."""
    folder = tmp_path_factory.mktemp("bags")
    string = STORE.types["std_msgs/msg/String"]
    topics = {
        "/cam/image": (
            "sensor_msgs/msg/Image",
            [raw_image(k, rgb, e) for k, (rgb, e, _) in enumerate(pictures)],
        ),
        "/cam/image/compressed": (
            "sensor_msgs/msg/CompressedImage",
            [raw_jpeg(k, jpeg) for k, (_, _, jpeg) in enumerate(pictures)],
        ),
        "/chatter": (
            "std_msgs/msg/String",
            [STORE.serialize_cdr(string(data="hi"), "std_msgs/msg/String").tobytes()],
        ),
    }
    for storage in STORAGE:
        write_bag(folder / storage, storage, topics)
    return {storage: folder / storage for storage in STORAGE}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_checkpoint(rigged_model(), tmp_path_factory.mktemp("bag_model") / "rigged.pt")


@pytest.fixture(scope="module")
def predictor(model_file) -> Predictor:
    return Predictor(model_file, backend="torch")


# --- reading output bags ----------------------------------------------------------------------


def read_bag(path: Path) -> tuple[dict[str, list[tuple[int, bytes]]], dict, dict]:
    """Messages per topic (bag time, raw), connections per topic, and metadata.yaml's content."""
    messages = defaultdict(list)
    with Reader(path) as reader:
        connections = {c.topic: c for c in reader.connections}
        for connection, timestamp, raw in reader.messages():
            messages[connection.topic].append((timestamp, bytes(raw)))
    metadata = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return dict(messages), connections, metadata


def image_array(msg: Image) -> np.ndarray:
    """The pixels of an unpadded mono8 / mono16 / rgb8 image (as the tool writes them)."""
    dtype, channels = {"mono8": (np.uint8, ()), "mono16": ("<u2", ()), "rgb8": (np.uint8, (3,))}[msg.encoding]
    return np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width, *channels)


def run(*args: str, capsys=None) -> tuple[int, list[str]]:
    """``rt-panoptic-bag ARGS`` in this process: exit status and stderr's lines (progress bar dropped)."""
    status = bag_main([str(a) for a in args])
    lines = []
    if capsys is not None:
        err = capsys.readouterr().err
        lines = [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and not ln.startswith("segment:")]
    return status, lines


# --- the main job -----------------------------------------------------------------------------


@pytest.mark.parametrize("storage", sorted(STORAGE))
@pytest.mark.parametrize("topic", ["/cam/image", "/cam/image/compressed"])
def test_every_frame_has_its_outputs(storage, topic, bags, pictures, model_file, predictor, tmp_path, capsys):
    overlay = storage == "mcap"  # both ways, without a third run per case
    track = topic.endswith("/image")  # tracking is on by default; off with --no-track
    out = tmp_path / "out"
    args = [bags[storage], out, "--image-topic", topic, "--model", model_file, "--backend", "torch"]
    options = [*(["--overlay"] if overlay else []), *([] if track else ["--no-track"])]
    status, lines = run(*args, *options, capsys=capsys)
    assert status == 0, lines
    assert lines[-1].startswith(f"rt-panoptic-bag: wrote {out}: {FRAMES} frame(s)"), lines

    messages, connections, metadata = read_bag(out)
    assert metadata["storage_identifier"] == storage  # the input's storage format
    names = OUTPUTS + (("overlay",) if overlay else ())
    expected_topics = {f"/cam/panoptic/{n}" for n in (*names, "label_info")}  # the image topic's namespace
    assert set(messages) == set(connections) == expected_topics
    # what the ids mean: once, with the first frame's header and bag time, offered latched
    [(stamp, raw)] = messages["/cam/panoptic/label_info"]
    label_info = deserialize_message(raw, LabelInfo)
    assert stamp == T0 + BAG_DELAY and label_info.header.frame_id == "cam_optical"
    assert [c.class_name for c in label_info.class_map] == [*predictor.cfg.dataset.class_names, "unlabeled"]
    assert label_info.class_map[-1].class_id == 255
    qos = connections["/cam/panoptic/label_info"].ext.offered_qos_profiles[0]
    assert qos.durability.name == "TRANSIENT_LOCAL" and qos.depth == 1
    bag_times = [T0 + k * PERIOD + BAG_DELAY for k in range(FRAMES)]
    for name in names:  # exactly one message per frame and topic, at the frame's bag time
        assert [t for t, _ in messages[f"/cam/panoptic/{name}"]] == bag_times, name

    assert metadata["custom_data"]["rt_panoptic_ros.tracking"] == (
        "max_age=30 iou_threshold=0.3" if track else "disabled"
    )
    tracker = PanopticTracker()  # the library's tracker, on the frames in bag order
    for k, (rgb, encoding, jpeg) in enumerate(pictures):
        result = predictor(expected_rgb("jpeg" if topic.endswith("compressed") else encoding, rgb, jpeg))
        if track:
            result = tracker.update(result, T0 + k * PERIOD)
        semantic = deserialize_message(messages["/cam/panoptic/semantic"][k][1], Image)
        instance = deserialize_message(messages["/cam/panoptic/instance"][k][1], Image)
        detections = deserialize_message(messages["/cam/panoptic/detections"][k][1], Detection2DArray)
        for msg in (semantic, instance, detections):  # the input's header, unchanged
            assert (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec) == T0 + k * PERIOD
            assert msg.header.frame_id == "cam_optical"
        assert (semantic.encoding, instance.encoding) == ("mono8", "mono16")
        np.testing.assert_array_equal(image_array(semantic), result.semantic.numpy())
        np.testing.assert_array_equal(image_array(instance), result.instance.numpy())
        assert len(detections.detections) > 0, "the rigged model finds things"
        assert detections == detections_msg(detections.header, result.segments)
        if overlay:
            picture = image_array(deserialize_message(messages["/cam/panoptic/overlay"][k][1], Image))
            assert picture.shape == (H, W, 3) and not np.array_equal(picture, rgb)


def test_output_bag_declares_its_types_for_players(bags, model_file, tmp_path):
    """Definitions and RIHS01 hashes are in the bag (``ros2 bag info``/``play`` and Foxglove read them)."""
    for storage in STORAGE:
        out = tmp_path / storage
        assert run(bags[storage], out, "--image-topic", "/cam/image", "--model", model_file,
                   "--backend", "torch", "--duration", "0.05")[0] == 0  # fmt: skip
        _, connections, metadata = read_bag(out)
        detections = connections["/cam/panoptic/detections"]
        assert detections.msgtype == "vision_msgs/msg/Detection2DArray"
        assert detections.digest == DETECTION2DARRAY_HASH
        assert "vision_msgs/Detection2D[] detections" in detections.msgdef.data  # from the storage file
        assert "MSG: vision_msgs/ObjectHypothesisWithPose" in detections.msgdef.data
        semantic = connections["/cam/panoptic/semantic"]
        assert semantic.msgtype == "sensor_msgs/msg/Image" and "uint32 height" in semantic.msgdef.data
        assert semantic.ext.offered_qos_profiles[0].reliability.name == "RELIABLE"
        hashes = {t["topic_metadata"]["name"]: t["topic_metadata"]["type_description_hash"]
                  for t in metadata["topics_with_message_count"]}  # fmt: skip
        assert hashes["/cam/panoptic/detections"] == DETECTION2DARRAY_HASH
        assert metadata["custom_data"]["rt_panoptic_ros.frames_written"] == "1"


def test_type_definitions_come_from_the_installed_vision_msgs():
    share = Path(vision_msgs.__file__).resolve().parents[4] / "share" / "vision_msgs" / "msg"
    assert vision_msgs_definitions().resolve() == share
    installed = json.loads((share / "Detection2DArray.json").read_text())["type_hashes"][0]["hash_string"]
    for folder in (share, _REPO_VISION_MSGS):  # the fallback copy gives the same types
        assert output_typestore(folder).hash_rihs01("vision_msgs/msg/Detection2DArray") == installed


def test_start_and_duration_select_a_range(bags, model_file, tmp_path):
    out = tmp_path / "range"
    # Frames lie at +0.0, +0.1, ... s after the bag's first message: [0.15, 0.35) holds two.
    status, _ = run(bags["sqlite3"], out, "--image-topic", "/cam/image", "--model", model_file,
                    "--backend", "torch", "--start", "0.15", "--duration", "0.2")  # fmt: skip
    assert status == 0
    messages, _, _ = read_bag(out)
    assert [t for t, _ in messages["/cam/panoptic/semantic"]] == [T0 + k * PERIOD + BAG_DELAY for k in (2, 3)]


def test_output_topics_follow_the_image_topic_namespace():
    assert output_topics("/cam/image", False, False) == {
        "semantic": "/cam/panoptic/semantic",
        "instance": "/cam/panoptic/instance",
        "detections": "/cam/panoptic/detections",
    }
    assert output_topics("/image", False, True)["overlay"] == "/panoptic/overlay"
    assert output_topics("/front/camera/image_raw/compressed", True, False)["semantic"] == (
        "/front/camera/panoptic/semantic"
    )


# --- bad input: one line each -----------------------------------------------------------------


def one_error_line(status: int, lines: list[str], *needles: str) -> str:
    assert status == 1, lines
    assert len(lines) == 1 and lines[0].startswith("rt-panoptic-bag: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_a_path_that_is_not_a_bag(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("hello")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping")
    cases = {
        "missing": "no such file or directory",
        "folder": "not a rosbag2 bag (no metadata.yaml)",
        "notes.txt": "not a rosbag2 bag",
        "broken": "not rosbag2 metadata",
    }
    for name, needle in cases.items():
        one_error_line(*run(tmp_path / name, tmp_path / "out", "--image-topic", "/x", capsys=capsys), needle)
    assert not (tmp_path / "out").exists()


def test_a_topic_that_is_not_in_the_bag_lists_the_image_topics(bags, tmp_path, capsys):
    status, lines = run(bags["mcap"], tmp_path / "out", "--image-topic", "/cam/imag", capsys=capsys)
    one_error_line(
        status, lines, "no topic /cam/imag", "image topics in the bag: /cam/image, /cam/image/compressed"
    )


def test_a_topic_of_another_type(bags, tmp_path, capsys):
    status, lines = run(bags["sqlite3"], tmp_path / "out", "--image-topic", "/chatter", capsys=capsys)
    one_error_line(status, lines, "/chatter is std_msgs/msg/String", "sensor_msgs/msg/Image")


def test_bad_range(bags, tmp_path, capsys):
    base = (bags["sqlite3"], tmp_path / "out", "--image-topic", "/cam/image")
    one_error_line(*run(*base, "--start", "-1", capsys=capsys), "--start -1.0")
    one_error_line(*run(*base, "--duration", "0", capsys=capsys), "--duration 0.0")
    one_error_line(*run(*base, "--start", "100", capsys=capsys), "holds no messages in the selected")


def test_an_existing_output_is_refused_unless_overwrite(bags, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("not a bag")
    base = (bags["sqlite3"], out, "--image-topic", "/cam/image", "--model", model_file, "--backend", "torch")
    one_error_line(*run(*base, capsys=capsys), f"{out} exists; pass --overwrite")
    one_error_line(*run(*base, "--overwrite", capsys=capsys), "not a bag folder")  # never deletes other files
    assert (out / "keep.txt").read_text() == "not a bag"
    inside = run(bags["sqlite3"], bags["sqlite3"] / "out", "--image-topic", "/cam/image", capsys=capsys)
    one_error_line(*inside, "outside the input bag")

    old = tmp_path / "old"
    assert run(*base[:1], old, *base[2:], "--duration", "0.05")[0] == 0  # a bag of one frame
    status, lines = run(*base[:1], old, *base[2:], "--overwrite", capsys=capsys)
    assert status == 0, lines
    messages, _, _ = read_bag(old)
    assert len(messages["/cam/panoptic/semantic"]) == FRAMES  # replaced, not appended to


def test_a_corrupt_message_is_skipped_and_named(pictures, model_file, tmp_path, capsys):
    raws = [raw_image(k, rgb, e) for k, (rgb, e, _) in enumerate(pictures)]
    raws[2] = raws[2][:60]  # truncated CDR: not a message at all
    short = STORE.types["sensor_msgs/msg/Image"](
        header=header(4), height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3,
        data=np.zeros(100, np.uint8),
    )  # fmt: skip
    raws[4] = STORE.serialize_cdr(short, "sensor_msgs/msg/Image").tobytes()  # a message, but a bad image
    bag = tmp_path / "corrupt"
    bag_times = write_bag(bag, "mcap", {"/cam/image": ("sensor_msgs/msg/Image", raws)})
    status, lines = run(bag, tmp_path / "out", "--image-topic", "/cam/image", "--model", model_file,
                        "--backend", "torch", capsys=capsys)  # fmt: skip
    assert status == 0, lines
    skipped = [ln for ln in lines if "skipped the frame" in ln]
    assert len(skipped) == 2, lines
    assert "1700000000.205000000 (+0.200 s)" in skipped[0] and "sensor_msgs/msg/Image" in skipped[0]
    assert "1700000000.405000000 (+0.400 s)" in skipped[1] and "image data holds 100 bytes" in skipped[1]
    assert re.search(rf"wrote .*: {FRAMES - 2} frame\(s\) \(.*\), 2 skipped$", lines[-1]), lines[-1]
    messages, _, metadata = read_bag(tmp_path / "out")
    kept = [t for k, t in enumerate(bag_times) if k not in (2, 4)]
    for name in OUTPUTS:
        assert [t for t, _ in messages[f"/cam/panoptic/{name}"]] == kept
    assert metadata["custom_data"]["rt_panoptic_ros.frames_skipped"] == "2"


# --- Ctrl-C -------------------------------------------------------------------------------------


def test_ctrl_c_leaves_a_valid_bag_with_every_frame_done(model_file, tmp_path):
    """A real process, a real SIGINT part-way: the bag is closed and holds a prefix of the frames."""
    rng = np.random.default_rng(1)
    total = 300
    raws = [raw_image(k, rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "rgb8") for k in range(total)]
    bag = tmp_path / "long"
    bag_times = write_bag(bag, "sqlite3", {"/cam/image": ("sensor_msgs/msg/Image", raws)})
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("rt-panoptic-bag")
    command = [exe, bag, out, "--image-topic", "/cam/image", "--model", model_file, "--backend", "torch"]
    process = subprocess.Popen([str(c) for c in command], stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(
        target=lambda: err.extend(iter(lambda: process.stderr.read(1), "")), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        done = [int(m) for m in re.findall(rf"(\d+)/{total} ", "".join(err))]
        if done and max(done) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "".join(err)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    reader.join(timeout=5)
    text = "".join(err)
    last = text.strip().splitlines()[-1]
    assert "Traceback" not in text
    match = re.search(
        rf"interrupted after (\d+) of {total} frame\(s\).*{out} is a valid bag holding them", last
    )
    assert match, last
    written = int(match.group(1))
    assert 3 <= written < total

    messages, _, metadata = read_bag(out)  # readable: metadata written, storage committed
    for name in OUTPUTS:
        assert [t for t, _ in messages[f"/cam/panoptic/{name}"]] == bag_times[:written]
    assert metadata["custom_data"]["rt_panoptic_ros.interrupted"] == "true"
    assert metadata["message_count"] == written * len(OUTPUTS) + 1  # and the label info, once


@pytest.mark.parametrize("storage", sorted(STORAGE))
def test_a_full_disk_leaves_no_bag_and_says_so(storage, bags, model_file, tmp_path, capsys):
    """A 256 KiB tmpfs fills up after a few frames; neither a bag nor its staging folder stays."""
    with small_tmpfs(tmp_path / "disk", "size=256k") as disk:
        out = disk / "out"
        args = (
            bags[storage],
            out,
            "--image-topic",
            "/cam/image",
            "--model",
            model_file,
            "--backend",
            "torch",
        )
        status, lines = run(*args, capsys=capsys)
        assert status == 1
        errors = [line for line in lines if "error:" in line]
        assert len(errors) == 1, lines
        assert errors[0].startswith(f"rt-panoptic-bag: error: {out}: cannot write the bag (")
        assert errors[0].endswith("no bag written (the unfinished one was removed)")
        assert list(disk.iterdir()) == []

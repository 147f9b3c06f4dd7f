"""The panoptic node for real: its own process, talking to this one over DDS.

One node process per scenario (start-up costs seconds): a raw-image node in ``/t1`` for
outputs, encodings, bad input, run-time parameters and overload; a compressed-image node in
a namespace with remapped input; a few that must refuse to start.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import rigged_model, run_cli, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from rt_panoptic_ros.ros.image_conversion import image_to_rgb
from rt_panoptic_ros.ros.testing.harness import (
    CameraStream,
    OutputRecorder,
    Spinner,
    node_command,
    stamp_key,
    start_node,
    stop_node,
)

READY_TIMEOUT = 90.0


class Rig:
    """A node process plus a camera, a recorder and a diagnostics listener in this process."""

    def __init__(self, context, namespace, parameters, remaps, log, camera_namespace=None):
        self.process = start_node(parameters, remaps, log=log)
        self.namespace = namespace
        self.log = log
        self.camera = CameraStream(camera_namespace or namespace, frame_id="test_camera", context=context)
        self.recorder = OutputRecorder(namespace, context=context)
        self.diagnostics: list[DiagnosticArray] = []
        self.recorder.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.spinner = Spinner(self.camera, self.recorder)

    def wait_ready(self, topic_publisher=None, probe=None) -> None:
        """Wait until a probe frame has come back on every output.

        Matching is asymmetric: the recorder seeing the node's publishers does not mean the
        node has seen the recorder yet, and the node skips outputs nobody subscribes to. So
        probe frames are sent until one is answered on all outputs (``probe`` builds one
        message for ``topic_publisher``; a raw rgb8 frame by default).
        """
        publisher = topic_publisher or self.camera.publisher
        probe = probe or (lambda: image_msg(rgb_frame(32, 48, seed=1), "rgb8"))
        ready = wait_for(
            lambda: (
                (publisher.get_subscription_count() > 0 and self.recorder.connected())
                or self.process.poll() is not None
            ),
            READY_TIMEOUT,
        )
        assert ready and self.process.poll() is None, f"node did not start:\n{self.log.read_text()}"
        got = self.recorder.received.messages
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            key = self.send(probe(), publisher)
            if wait_for(lambda key=key: all(key in got[n] for n in got), 2.0):
                return
        raise AssertionError(f"node never answered a probe frame:\n{self.log.read_text()[-2000:]}")

    def send(self, message: Image | CompressedImage, publisher=None) -> int:
        message.header = Header(stamp=self.camera.get_clock().now().to_msg(), frame_id="test_camera")
        key = stamp_key(message.header)
        self.camera.sent[key] = time.monotonic()
        (publisher or self.camera.publisher).publish(message)
        return key

    def outputs(self, key: int, names=("semantic", "instance", "detections", "overlay"), timeout=20.0):
        got = self.recorder.received.messages
        assert wait_for(lambda: all(key in got[n] for n in names), timeout), (
            f"outputs missing for {key}: {[n for n in names if key not in got[n]]}\n"
            + self.log.read_text()[-2000:]
        )
        return {n: got[n][key] for n in names}

    def last_diagnostics(self) -> dict[str, str]:
        """This rig's node's latest status (/diagnostics also carries other nodes')."""
        name = f"{self.namespace.rstrip('/')}/panoptic_node:"
        mine = lambda: [d for d in self.diagnostics if d.status[0].name.startswith(name)]  # noqa: E731
        assert wait_for(mine, 5.0)
        return {kv.key: kv.value for kv in mine()[-1].status[0].values}

    def close(self) -> int:
        self.spinner.stop()
        self.camera.destroy_node()
        self.recorder.destroy_node()
        return stop_node(self.process)


@pytest.fixture(scope="module")
def rig(context, model_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("node_logs") / "t1.log"
    parameters = {"model": str(model_file), "backend": "torch"}  # qos_reliability: auto (default)
    r = Rig(context, "/t1", parameters, {"__ns": "/t1"}, log)
    r.wait_ready()
    yield r
    assert r.close() == 0, f"node did not exit cleanly:\n{log.read_text()[-2000:]}"
    assert "Traceback" not in log.read_text()


def rgb_frame(h=120, w=200, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def image_msg(
    array: np.ndarray,
    encoding: str,
    step: int | None = None,
    bigendian: bool = False,
    width: int | None = None,
) -> Image:
    """A raw ``Image`` holding ``array``'s bytes as they lie (rows padded to ``step``)."""
    h, w = array.shape[0], width or array.shape[1]
    row = array.reshape(h, -1).view(np.uint8)
    step = step or row.shape[1]
    data = np.zeros((h, step), np.uint8)
    data[:, : row.shape[1]] = row
    return Image(height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=step, data=data.tobytes())


def encoded_frames(rgb: np.ndarray) -> dict[str, Image]:
    """The same picture in every encoding the node accepts."""
    r, g, b = (rgb[..., k].astype(np.int32) for k in range(3))
    gray = (0.299 * r + 0.587 * g + 0.114 * b).astype(np.uint8)
    y = gray
    u = np.clip((b - y) * 0.564 + 128, 0, 255).astype(np.uint8)
    v = np.clip((r - y) * 0.713 + 128, 0, 255).astype(np.uint8)
    uyvy = np.stack([u[:, 0::2], y[:, 0::2], v[:, 0::2], y[:, 1::2]], axis=-1).reshape(rgb.shape[0], -1)
    yuyv = np.stack([y[:, 0::2], u[:, 0::2], y[:, 1::2], v[:, 0::2]], axis=-1).reshape(rgb.shape[0], -1)

    def bayer(pattern: str) -> np.ndarray:
        mosaic = np.zeros(rgb.shape[:2], np.uint8)
        channel = {"r": 0, "g": 1, "b": 2}
        for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[k]]]
        return mosaic

    frames = {
        "rgb8": image_msg(rgb, "rgb8"),
        "rgb8_padded": image_msg(rgb, "rgb8", step=rgb.shape[1] * 3 + 8),
        "bgr8": image_msg(rgb[..., ::-1].copy(), "bgr8"),
        "rgba8": image_msg(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "rgba8"),
        "bgra8": image_msg(np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)]), "bgra8"),
        "mono8": image_msg(gray, "mono8"),
        "mono16": image_msg(gray.astype(np.uint16) * 257, "mono16"),
        "mono16_bigendian": image_msg((gray.astype(np.uint16) * 257).astype(">u2"), "mono16", bigendian=True),
        "uyvy": image_msg(uyvy, "uyvy", width=rgb.shape[1]),
        "yuv422": image_msg(uyvy, "yuv422", width=rgb.shape[1]),
        "yuyv": image_msg(yuyv, "yuyv", width=rgb.shape[1]),
        "yuv422_yuy2": image_msg(yuyv, "yuv422_yuy2", width=rgb.shape[1]),
    }
    for pattern in ("rggb", "bggr", "gbrg", "grbg"):
        frames[f"bayer_{pattern}8"] = image_msg(bayer(pattern), f"bayer_{pattern}8")
    return frames


def check_outputs(outputs, header_key: int, height: int, width: int) -> None:
    semantic, instance, detections, overlay = (
        outputs[n] for n in ("semantic", "instance", "detections", "overlay")
    )
    for message in (semantic, instance, detections, overlay):
        assert stamp_key(message.header) == header_key
        assert message.header.frame_id == "test_camera"
    for message in (semantic, instance, overlay):
        assert (message.height, message.width) == (height, width)
    assert (semantic.encoding, instance.encoding, overlay.encoding) == ("mono8", "mono16", "rgb8")
    semantic_map = np.frombuffer(bytes(semantic.data), np.uint8).reshape(height, semantic.step)[:, :width]
    instance_map = np.frombuffer(bytes(instance.data), ">u2" if instance.is_bigendian else "<u2").reshape(
        height, instance.step // 2
    )[:, :width]
    ids = {int(d.id) for d in detections.detections}
    assert set(np.unique(instance_map).tolist()) - {0} == ids
    for d in detections.detections:
        pixels = semantic_map[instance_map == int(d.id)]
        assert (pixels == int(d.results[0].hypothesis.class_id)).all()
        assert 0 < d.results[0].hypothesis.score <= 1
        assert 0 < d.bbox.size_x <= width and 0 < d.bbox.size_y <= height


def test_outputs_keep_the_header_and_size(rig):
    rgb = rgb_frame(120, 200)
    key = rig.send(image_msg(rgb, "rgb8"))
    outputs = rig.outputs(key)
    check_outputs(outputs, key, 120, 200)
    assert len(outputs["detections"].detections) > 0, "the rigged model finds things"
    assert image_to_rgb(outputs["overlay"]).shape == (120, 200, 3)
    # qos_reliability auto (the default) follows this process's reliable camera
    diagnostics = rig.last_diagnostics()
    assert diagnostics["input_qos"] == "reliable (auto: 1 publisher, all reliable)", diagnostics
    assert diagnostics["output_qos"] == "reliable, keep last 5"
    assert "fastdds_large_images.xml (shipped" in diagnostics["dds_profile"]


def test_every_encoding(rig):
    rgb = rgb_frame(96, 160, seed=3)
    for encoding, message in encoded_frames(rgb).items():
        key = rig.send(message)
        check_outputs(rig.outputs(key), key, 96, 160)
        time.sleep(0.05)  # one at a time: the node keeps only the newest frame
        del encoding


BAD_FRAMES = {
    "unknown encoding": Image(height=4, width=4, encoding="weird16", step=8, data=bytes(32)),
    "step too small": Image(height=4, width=4, encoding="rgb8", step=6, data=bytes(24)),
    "data too short": Image(height=8, width=8, encoding="rgb8", step=24, data=bytes(100)),
    "0x0": Image(height=0, width=0, encoding="rgb8", step=0, data=b""),
    "absurd size": Image(height=100000, width=100000, encoding="mono8", step=100000, data=bytes(10)),
}


def test_bad_input_is_rejected_and_the_node_keeps_serving(rig):
    before = int(rig.last_diagnostics()["rejected"])
    for message in BAD_FRAMES.values():
        rig.send(message)
        time.sleep(0.3)  # each bad frame reaches inference (keep-latest would merge a burst)
    key = rig.send(image_msg(rgb_frame(64, 64), "rgb8"))
    check_outputs(rig.outputs(key), key, 64, 64)
    assert wait_for(lambda: int(rig.last_diagnostics()["rejected"]) >= before + len(BAD_FRAMES), 5.0)
    assert rig.process.poll() is None
    log = rig.log.read_text()
    assert "frame rejected" in log and "Traceback" not in log


def set_parameter(rig, name: str, value) -> tuple[bool, str]:
    client = rig.recorder.create_client(SetParameters, "/t1/panoptic_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)
    if isinstance(value, bool):
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, int):
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    elif isinstance(value, float):
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    future = client.call_async(
        SetParameters.Request(parameters=[Parameter(name=name, value=parameter_value)])
    )
    assert wait_for(future.done, 10.0)
    rig.recorder.destroy_client(client)
    result = future.result().results[0]
    return result.successful, result.reason


def test_thresholds_change_at_run_time_and_bad_ones_are_refused(rig):
    rgb = rgb_frame(128, 128, seed=5)
    assert len(rig.outputs(rig.send(image_msg(rgb, "rgb8")))["detections"].detections) > 0
    assert set_parameter(rig, "decoder.mask_thresh", 1.0) == (True, "")
    time.sleep(0.2)
    assert rig.outputs(rig.send(image_msg(rgb, "rgb8")))["detections"].detections == []  # M <= 1: no mask
    ok, reason = set_parameter(rig, "decoder.mask_thresh", 1.5)
    assert not ok and "1.5" in reason
    ok, reason = set_parameter(rig, "decoder.iou_variant", "giou")
    assert not ok and "giou" in reason
    ok, _ = set_parameter(rig, "model", "other.pt")
    assert not ok  # read-only after start-up
    assert set_parameter(rig, "decoder.mask_thresh", 0.4) == (True, "")
    assert set_parameter(rig, "overlay_scale", 0.5) == (True, "")
    time.sleep(0.2)
    outputs = rig.outputs(rig.send(image_msg(rgb, "rgb8")))
    assert len(outputs["detections"].detections) > 0
    assert (outputs["overlay"].height, outputs["overlay"].width) == (64, 64)  # the others keep 128x128
    assert (outputs["semantic"].height, outputs["semantic"].width) == (128, 128)
    assert set_parameter(rig, "overlay_scale", 1.0) == (True, "")
    time.sleep(0.2)


def test_instances_keep_their_track_ids_and_tracking_can_be_switched_off(rig):
    """Tracking is on by default: an object keeps its id across frames, a new one gets a new id
    (pixel k <-> detection id k stays true); switched off, every frame numbers 1..K afresh."""

    def ids(rgb: np.ndarray) -> list[int]:
        key = rig.send(image_msg(rgb, "rgb8"))
        outputs = rig.outputs(key)
        check_outputs(outputs, key, *rgb.shape[:2])
        return sorted(int(d.id) for d in outputs["detections"].detections)

    first, other = rgb_frame(128, 128, seed=5), rgb_frame(128, 128, seed=6)
    before = ids(first)
    assert ids(first) == before  # the same objects: the same ids
    moved = ids(other)  # other objects: new ids beside the kept ones, not 1..K
    assert moved != list(range(1, len(moved) + 1)) and len(set(moved) - set(before)) > 0
    assert int(rig.last_diagnostics()["live_tracks"]) >= len(moved)
    assert set_parameter(rig, "tracking.enabled", False) == (True, "")
    time.sleep(0.2)
    assert ids(other) == list(range(1, len(moved) + 1))
    ok, reason = set_parameter(rig, "tracking.max_age", -1)
    assert not ok and "-1" in reason
    assert set_parameter(rig, "tracking.enabled", True) == (True, "")
    time.sleep(0.2)


def test_label_info_reaches_a_late_subscriber_and_follows_the_threshold(rig):
    """Latched (transient local): a subscriber that starts after the node still gets it."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import LabelInfo

    got: list[LabelInfo] = []
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    subscription = rig.recorder.create_subscription(LabelInfo, "/t1/panoptic/label_info", got.append, qos)
    try:
        assert wait_for(lambda: got, 10.0)
        names = [c.class_name for c in got[-1].class_map]
        assert names[:-1] == list(rigged_model().cfg.dataset.class_names) and names[-1] == "unlabeled"
        assert [c.class_id for c in got[-1].class_map][-1] == 255
        before = float(got[-1].threshold)
        assert set_parameter(rig, "decoder.instance_score_thresh", 0.25) == (True, "")
        assert wait_for(lambda: abs(got[-1].threshold - 0.25) < 1e-6, 10.0)
        assert set_parameter(rig, "decoder.instance_score_thresh", before) == (True, "")
    finally:
        rig.recorder.destroy_subscription(subscription)


def test_overload_drops_frames_and_latency_stays_bounded(rig):
    """60 frames in one second, far faster than inference: outputs stay fresh, drops counted."""
    dropped_before = int(rig.last_diagnostics()["dropped"])
    rgb = rgb_frame(256, 256, seed=7)
    keys = []
    for _ in range(60):
        keys.append(rig.send(image_msg(rgb, "rgb8")))
        time.sleep(1 / 60)
    arrival = rig.recorder.received.arrival["semantic"]
    wait_for(lambda: keys[-1] in arrival, 10.0)
    answered = [k for k in keys if k in arrival]
    assert 0 < len(answered) < len(keys), "some frames answered, the rest replaced while busy"
    assert keys[-1] in answered, "the newest frame is always answered"
    latencies = [arrival[k] - rig.camera.sent[k] for k in answered]
    service = min(latencies)  # about one inference
    # A queue would make the last answers wait for all frames before them (seconds);
    # keep-latest bounds every answer to about two inferences plus transport.
    assert max(latencies) < 3 * service + 0.5, (service, latencies)
    assert wait_for(
        lambda: int(rig.last_diagnostics()["dropped"]) >= dropped_before + len(keys) - len(answered) - 2
    )


def test_compressed_input_namespace_and_remapping(context, model_file, tmp_path):
    """Node in /cam, its compressed input remapped to /camera/jpeg; outputs under /cam/panoptic."""
    import cv2

    log = tmp_path / "cam.log"
    parameters = {"model": str(model_file), "backend": "torch", "compressed": True, "max_input_pixels": 20000}
    rig = Rig(context, "/cam", parameters, {"__ns": "/cam", "image/compressed": "/camera/jpeg"}, log)
    publisher = rig.camera.create_publisher(CompressedImage, "/camera/jpeg", 5)
    try:
        probe = cv2.imencode(".png", rgb_frame(32, 48, seed=1))[1].tobytes()
        rig.wait_ready(publisher, probe=lambda: CompressedImage(format="png", data=probe))
        rgb = rgb_frame(100, 150, seed=9)
        for fmt, ext in (("jpeg", ".jpg"), ("png", ".png")):
            ok, encoded = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            assert ok
            key = rig.send(CompressedImage(format=fmt, data=encoded.tobytes()), publisher)
            check_outputs(rig.outputs(key), key, 100, 150)
        rig.send(CompressedImage(format="jpeg", data=b"\xff\xd8\xff garbage"), publisher)
        time.sleep(0.5)
        ok, encoded = cv2.imencode(".jpg", rgb)
        key = rig.send(CompressedImage(format="jpeg", data=encoded.tobytes()), publisher)
        check_outputs(rig.outputs(key), key, 100, 150)
        assert wait_for(lambda: int(rig.last_diagnostics()["rejected"]) >= 1, 5.0)
        rejected = int(rig.last_diagnostics()["rejected"])
        big = cv2.imencode(".png", rgb_frame(200, 150, seed=3))[1].tobytes()  # 30000 > 20000 pixels
        rig.send(CompressedImage(format="png", data=big), publisher)
        assert wait_for(lambda: int(rig.last_diagnostics()["rejected"]) >= rejected + 1, 5.0)
    finally:
        assert rig.close() == 0
    text = log.read_text()
    assert "/camera/jpeg" in text  # (the size refusal's own line is throttled behind the bad jpeg's)
    assert "Failed to publish" not in text and "context is invalid" not in text


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"decoder.mask_thresh": 2.0}, "decoder.mask_thresh"),
        ({"backend": "cuda"}, "backend: 'cuda' is not one of"),
        ({"model": "/nonexistent/model.pt"}, "/nonexistent/model.pt: no such file"),
        ({"input_height": 256}, "input_height/input_width: set both or neither"),
        ({"cameras": ["front", "front"]}, "cameras: names repeat"),
        ({"cameras": ["front", "3d"]}, "cameras: '3d' is not a relative topic name"),
        (
            {"backend": "onnxruntime", "precision": "int8", "input_height": 128, "input_width": 256},
            "precision int8: needs calibration images",
        ),
    ],
)
def test_bad_startup_parameters_exit_with_one_line(parameters, message, model_file, tmp_path):
    import subprocess

    parameters = {"model": str(model_file), **parameters}
    result = subprocess.run(node_command(parameters), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result
    output = result.stdout + result.stderr
    assert message in output, output
    assert "Traceback" not in output


@pytest.mark.slow
def test_demo_command(model_file, tmp_path):
    import json

    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(3):
        cv2.imwrite(str(frames / f"{k}.png"), rgb_frame(128, 256, seed=k))
    out = tmp_path / "demo_output"
    result = run_cli(
        "rt-panoptic-demo", "--frames", str(frames), "--model", str(model_file),
        "--count", "8", "--rate", "4", "--output", str(out), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    assert {"frames_in", "frames_out", "fps", "latency_p50_ms", "latency_p90_ms", "dropped"} <= set(report)
    assert report["frames_in"] == 8 and 0 < report["frames_out"] <= 8
    assert report["dropped"] == 8 - report["frames_out"]
    assert len(list((out / "overlay").glob("*.png"))) == report["frames_out"]
    assert "frames segmented" in result.stdout


def test_demo_says_why_the_node_did_not_start(model_file, tmp_path):
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), rgb_frame(128, 256, seed=0))
    result = run_cli(
        "rt-panoptic-demo", "--frames", str(frames), "--model", str(model_file), "--device", "cuda:99",
        "--count", "1", "--output", str(tmp_path / "out"), timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "rt-panoptic-demo: error: panoptic_node did not come up: backend/device: device: cuda:99"
    )
    assert "Traceback" not in result.stderr

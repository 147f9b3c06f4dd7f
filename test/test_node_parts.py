"""The node's plain parts, without a node: parameters, keep-latest slot, statistics, presets."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from rt_panoptic_ros.config import preset
from rt_panoptic_ros.ros.frame_slot import FrameSlot
from rt_panoptic_ros.ros.parameters import apply_decoder_values, check_value, node_parameters
from rt_panoptic_ros.ros.stats import LatencyWindow, RateWindow

ROOT = Path(__file__).resolve().parents[1]


def specs():
    return {s.name: s for s in node_parameters(preset("tri_cityscapes").decoder)}


def test_every_parameter_is_described_and_defaults_are_valid():
    for spec in specs().values():
        assert spec.description
        assert check_value(spec, spec.default) is None, spec.name
    decoder = {n for n in specs() if n.startswith("decoder.")}
    assert decoder == {
        "decoder.pre_nms_thresh", "decoder.pre_nms_top_n", "decoder.nms_thresh", "decoder.max_detections",
        "decoder.mask_thresh", "decoder.overlap_threshold", "decoder.stuff_area", "decoder.iou_variant",
        "decoder.instance_score_thresh", "decoder.box_map_background",
    }  # fmt: skip
    assert specs()["decoder.iou_variant"].default == "tri"  # from the model's config
    assert specs()["decoder.box_map_background"].choices == ("exclude", "tri")


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("decoder.mask_thresh", 1.5, "decoder.mask_thresh: 1.5 is outside [0.0, 1.0]"),
        ("decoder.mask_thresh", "high", "decoder.mask_thresh: expected float, got 'high'"),
        ("decoder.max_detections", 0, "decoder.max_detections: 0 is outside [1, 10000]"),
        ("decoder.iou_variant", "giou", "decoder.iou_variant: 'giou' is not one of iou, tri"),
        ("backend", "cuda", "backend: 'cuda' is not one of auto, torch, onnxruntime, tensorrt"),
        ("qos_reliability", "fast", "qos_reliability: 'fast' is not one of auto, best_effort, reliable"),
        ("output_reliability", "auto", "output_reliability: 'auto' is not one of reliable, best_effort"),
        ("input_height", 500, "input_height: 500 is not a multiple of 128"),
        ("qos_depth", True, "qos_depth: expected int, got True"),
    ],
)
def test_bad_values_are_refused_with_the_reason(name, value, reason):
    assert check_value(specs()[name], value) == reason


def test_integers_are_accepted_for_float_parameters():
    assert check_value(specs()["decoder.mask_thresh"], 1) is None


def test_decoder_values_apply_to_the_config():
    cfg = preset("small_cityscapes")
    changed = apply_decoder_values(
        cfg, {"decoder.mask_thresh": 0.3, "decoder.stuff_area": 10, "overlay_alpha": 1}
    )
    assert changed.decoder.mask_thresh == 0.3 and changed.decoder.stuff_area == 10
    assert changed.model == cfg.model and cfg.decoder.mask_thresh == 0.4
    assert apply_decoder_values(cfg, {"decoder.nms_thresh": 1}).decoder.nms_thresh == 1.0


def test_slot_keeps_the_latest_and_counts_drops():
    slot = FrameSlot()
    for k in range(5):
        slot.put(k)
    assert slot.take(timeout=1).message == 4
    assert slot.dropped == 4
    assert slot.take(timeout=0.05) is None  # empty: times out


def test_slot_wakes_a_waiting_consumer_and_closes():
    slot, got = FrameSlot(), []
    consumer = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    consumer.start()
    time.sleep(0.05)
    slot.put("frame")
    consumer.join(timeout=5)
    assert got[0].message == "frame"
    closer = threading.Thread(target=lambda: got.append(slot.take()))
    closer.start()
    slot.close()
    closer.join(timeout=5)
    assert got[1] is None and not closer.is_alive()


def test_rate_and_latency_windows():
    rate = RateWindow(window=2.0)
    for t in (10.0, 10.5, 11.0, 11.5):
        rate.tick(now=t)
    assert rate.rate(now=11.5) == 2.0
    assert rate.rate(now=13.2) == 0.5  # only 11.5 is left in the window
    latency = LatencyWindow()
    assert latency.percentile(50) == 0.0
    for v in range(1, 101):
        latency.add(float(v))
    assert latency.percentile(50) == 50.0 and latency.percentile(90) == 90.0


@pytest.mark.parametrize("name", ["demo_cpu.yaml", "tri_cityscapes_gpu.yaml", "bag_replay.yaml"])
def test_presets_hold_valid_parameters(name):
    document = yaml.safe_load((ROOT / "config" / name).read_text())
    parameters = document["/**"]["ros__parameters"]
    known = specs()
    for key, value in parameters.items():
        if key == "use_sim_time":
            assert isinstance(value, bool)
            continue
        assert key in known, f"{name}: unknown parameter {key}"
        assert check_value(known[key], value) is None, f"{name}: {key}"


def test_launch_file_compiles():
    """launch_ros is not installable here; the file must at least be valid Python."""
    source = (ROOT / "launch" / "panoptic.launch.py").read_text()
    compile(source, "panoptic.launch.py", "exec")

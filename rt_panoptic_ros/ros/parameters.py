"""The node's parameters in one table: names, defaults, descriptions, ranges, and checks.

Plain data and functions (no rclpy), so that the node only turns each :class:`ParamSpec`
into ``declare_parameter`` and every rule is tested without ROS. Decoder thresholds keep
their config names under ``decoder.`` and take their defaults from the model file, so a
model ships with the thresholds it was tuned with; they can be changed while running.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rt_panoptic_ros.config import SIZE_DIVISIBILITY, Config, DecoderConfig, settings
from rt_panoptic_ros.ros.qos import OUTPUT_RELIABILITY_SETTINGS, RELIABILITY_SETTINGS
from rt_panoptic_ros.runtime.backends import BACKENDS
from rt_panoptic_ros.tracking import TrackingSettings

#: ``auto``: the backend's default (torch: fp16 on CUDA; an ONNX or engine file: its own).
PRECISION_CHOICES = ("auto", "fp32", "fp16", "int8")
RELIABILITY_CHOICES = RELIABILITY_SETTINGS
#: Largest network input side the node accepts (pixels): beyond it memory, not accuracy, grows.
MAX_INPUT_SIDE = 8192


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Attributes:
        name: the ROS parameter name (``decoder.*`` for decoder thresholds).
        default: default value; its Python type is the parameter's type.
        description: shown by ``ros2 param describe``.
        low, high: inclusive numeric range (both or neither); ``step`` 0 = continuous.
        choices: allowed string values.
        read_only: fixed after start-up (needs a restart to change).
    """

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    step: float = 0
    choices: tuple[str, ...] = ()
    read_only: bool = True


def node_parameters(decoder: DecoderConfig) -> list[ParamSpec]:
    """Every parameter of the panoptic node; decoder defaults from ``decoder`` (the model's)."""
    return [*STARTUP_PARAMETERS, *RUNTIME_PARAMETERS, *decoder_parameters(decoder)]


#: Parameters read once at start-up (model loading, topics, QoS).
STARTUP_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model",
        "",
        "model file (.pt), ONNX file of any precision (rt-panoptic-export) or TensorRT engine; "
        "empty = the bundled model in the package share",
    ),
    ParamSpec("backend", "auto", f"inference engine: {', '.join(BACKENDS)}", choices=BACKENDS),
    ParamSpec("device", "cpu", "torch device: cpu, cuda, cuda:0, ..."),
    ParamSpec(
        "precision",
        "auto",
        "fp32, fp16 or int8; auto = the backend's default (torch: fp16 on CUDA; an ONNX or engine "
        "file: its own; tensorrt on a .pt: fp16). int8 on a .pt needs calibration_dir and an input size",
        choices=PRECISION_CHOICES,
    ),
    ParamSpec(
        "calibration_dir",
        "",
        "int8 on a .pt (onnxruntime, tensorrt): folder of images to calibrate on (once; the export "
        "is cached)",
    ),
    ParamSpec(
        "input_height",
        0,
        "network input height; 0 = the model file's (or, if it has none, the image's own, padded to "
        f"a multiple of {SIZE_DIVISIBILITY})",
        low=0,
        high=MAX_INPUT_SIDE,
        step=SIZE_DIVISIBILITY,
    ),
    ParamSpec(
        "input_width",
        0,
        "network input width; 0 = the model file's (or, if it has none, the image's own, padded to "
        f"a multiple of {SIZE_DIVISIBILITY})",
        low=0,
        high=MAX_INPUT_SIDE,
        step=SIZE_DIVISIBILITY,
    ),
    ParamSpec(
        "max_input_pixels",
        MAX_INPUT_SIDE * MAX_INPUT_SIDE // 2,
        "frames with more pixels are refused (counted as rejected), compressed ones before decoding; "
        "0 = no limit. Memory grows with the frame: 8192x4096 by default",
        low=0,
        high=2**40,
        step=1,
    ),
    ParamSpec(
        "compressed", False, "subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image"
    ),
    ParamSpec(
        "qos_reliability",
        "auto",
        "input reliability: auto (the camera's: reliable when all its publishers are, re-checked "
        "when they change), best_effort or reliable",
        choices=RELIABILITY_CHOICES,
    ),
    ParamSpec(
        "qos_depth", 1, "input queue depth (keep last); 1 = always the newest frame", low=1, high=100, step=1
    ),
    ParamSpec(
        "cameras",
        [],
        "names of several cameras served by this one node and model: camera c is read from "
        "c/image (c/image/compressed) and answered on c/panoptic/*, all relative to the node's "
        "namespace; empty = one camera on image and panoptic/*",
    ),
    ParamSpec(
        "batch_wait_ms",
        0,
        "with several cameras: once a frame waits, how long at most to wait for the other "
        "cameras' frames so that they share the network call; it never adds more than this to a "
        "frame's latency. 0 = take the frames that are there, never wait",
        low=0,
        high=1000,
        step=1,
    ),
    ParamSpec(
        "output_reliability",
        "reliable",
        "reliability of the panoptic/* outputs: reliable (every subscriber gets every answer) or best_effort",
        choices=OUTPUT_RELIABILITY_SETTINGS,
    ),
)

#: Parameters that can change while the node runs.
RUNTIME_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "publish_overlay", True, "render and publish panoptic/overlay (rgb8, for RViz)", read_only=False
    ),
    ParamSpec(
        "overlay_alpha",
        0.5,
        "weight of the panoptic colours in the overlay",
        low=0.0,
        high=1.0,
        read_only=False,
    ),
    ParamSpec(
        "overlay_scale",
        1.0,
        "size of panoptic/overlay relative to the image (smaller is cheaper to draw and send); the "
        "other outputs always keep the image's size",
        low=0.05,
        high=1.0,
        read_only=False,
    ),
    ParamSpec(
        "tracking.enabled",
        TrackingSettings.enabled,
        "give instances stable track ids across frames (panoptic/instance pixel values and "
        "Detection2D.id); off: each frame numbers its instances 1..K afresh. Switching it on "
        "starts new tracks",
        read_only=False,
    ),
    ParamSpec(
        "tracking.max_age",
        TrackingSettings.max_age,
        "frames a track is kept after it was last seen, so that an object missed or hidden "
        "for up to this many frames gets its id back",
        low=0,
        high=100000,
        step=1,
        read_only=False,
    ),
    ParamSpec(
        "tracking.iou_threshold",
        TrackingSettings.iou_threshold,
        "least overlap (mask IoU with the last frame, or IoU of the predicted box) for an "
        "instance to continue a track",
        low=0.01,
        high=1.0,
        read_only=False,
    ),
)


def decoder_parameters(decoder: DecoderConfig) -> list[ParamSpec]:
    """``decoder.<field>`` for every field of :class:`DecoderConfig`, changeable at run time.

    Description, range and choices are the config field's own (:func:`~rt_panoptic_ros.config.setting`),
    so the node checks a value exactly as the config does; defaults come from ``decoder``.
    """
    return [
        ParamSpec(
            f"decoder.{info.name}",
            getattr(decoder, info.name),
            info.help,
            low=info.low,
            high=info.high,
            step=info.step or (1 if info.hint is int else 0),
            choices=info.choices,
            read_only=False,
        )
        for info in settings(DecoderConfig)
    ]


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``spec`` (one line), or ``None`` if it is."""
    if spec.name == "cameras":
        return check_cameras(value)
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return f"{spec.name}: expected {expected.__name__}, got {value!r}"
    if spec.choices and value not in spec.choices:
        return f"{spec.name}: {value!r} is not one of {', '.join(spec.choices)}"
    if spec.low is not None and not spec.low <= value <= spec.high:
        return f"{spec.name}: {value} is outside [{spec.low}, {spec.high}]"
    if spec.step and spec.low is not None and (value - spec.low) % spec.step:
        return f"{spec.name}: {value} is not a multiple of {spec.step}"
    return None


def apply_decoder_values(cfg: Config, values: Mapping[str, Any]) -> Config:
    """``cfg`` with ``decoder.*`` parameter values (names with the prefix) applied."""
    changes = {k.removeprefix("decoder."): v for k, v in values.items() if k.startswith("decoder.")}
    if not changes:
        return cfg
    floats = {f.name for f in dataclasses.fields(DecoderConfig) if f.type in ("float", float)}
    changes = {k: float(v) if k in floats else v for k, v in changes.items()}
    return dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, **changes))


def tracking_settings(values: Mapping[str, Any], current: TrackingSettings) -> TrackingSettings:
    """``current`` with the ``tracking.*`` parameter values among ``values`` applied."""
    changes = {k.removeprefix("tracking."): v for k, v in values.items() if k.startswith("tracking.")}
    if "iou_threshold" in changes:
        changes["iou_threshold"] = float(changes["iou_threshold"])
    return dataclasses.replace(current, **changes) if changes else current


def check_cameras(names: Any) -> str | None:
    """Why ``names`` cannot be the ``cameras`` parameter (one line), or ``None``.

    Each name becomes a topic prefix (``<name>/image``), so it must be a relative ROS name:
    tokens of letters, digits and ``_`` (not starting with a digit) joined by ``/``.
    """
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        return f"cameras: expected a list of strings, got {names!r}"
    for name in names:
        if not _CAMERA_NAME.fullmatch(name):
            return f"cameras: {name!r} is not a relative topic name (letters, digits, _ and /)"
    if len(set(names)) != len(names):
        return f"cameras: names repeat in {list(names)}"
    return None


_CAMERA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")

"""The panoptic node: camera images in, panoptic segmentation out (ROS 2, rclpy).

This file only wires ROS to plain, separately tested pieces: parameters (``parameters.py``),
image conversions (``image_conversion.py``), the keep-latest slot (``frame_slot.py``),
message builders (``messages.py``), statistics (``stats.py``) and the
:class:`~rt_panoptic_ros.runtime.Predictor`.

Topics (relative, so namespaces and remapping work):

- in: ``image`` (``sensor_msgs/Image``) or, with ``compressed:=true``, ``image/compressed``;
- out: ``panoptic/semantic`` (mono8 class ids, 255 = void; mono16 for > 255 classes),
  ``panoptic/instance`` (mono16, 0 = none, k = detection ``id`` k),
  ``panoptic/detections`` (``vision_msgs/Detection2DArray``), ``panoptic/overlay`` (rgb8),
  and ``/diagnostics`` at 1 Hz.

Every output carries the input's header and size. Inference runs on its own thread behind a
keep-latest slot; outputs nobody subscribes to are not computed.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import RTPanopticError
from rt_panoptic_ros.panoptic.fusion import void_label
from rt_panoptic_ros.ros import image_conversion
from rt_panoptic_ros.ros.bundled import bundled_model_path
from rt_panoptic_ros.ros.frame_slot import FrameSlot
from rt_panoptic_ros.ros.messages import detections_msg, diagnostics_msg
from rt_panoptic_ros.ros.parameters import (
    RUNTIME_PARAMETERS,
    STARTUP_PARAMETERS,
    ParamSpec,
    apply_decoder_values,
    check_value,
    decoder_parameters,
)
from rt_panoptic_ros.ros.stats import LatencyWindow, RateWindow
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.runtime.sources import ModelSource
from rt_panoptic_ros.visualization import draw_overlay

NODE_NAME = "panoptic_node"
#: Output history: large images need more than one slot in flight to arrive intact over a
#: reliable DDS link (measured: depth 1 lost 12 of 20 ~0.5 MB images, depth 5 none).
OUTPUT_DEPTH = 5
#: Seconds between two identical warnings about bad input (a broken camera floods otherwise).
WARN_THROTTLE_S = 5.0


class StartupError(RTPanopticError):
    """The node cannot start (bad parameter, missing model); one line says why."""


class PanopticNode(Node):
    """Real-time panoptic segmentation of a camera stream."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        startup = {spec.name: self._declare(spec) for spec in STARTUP_PARAMETERS}
        runtime = {spec.name: self._declare(spec) for spec in RUNTIME_PARAMETERS}
        try:
            model_path = Path(startup["model"]) if startup["model"] else bundled_model_path()
            # A .pt, .onnx or .engine file; each carries its config (classes, decoder defaults).
            source = ModelSource.open(model_path)
        except RTPanopticError as error:
            raise StartupError(f"model: {error}") from None
        decoder = {spec.name: self._declare(spec) for spec in decoder_parameters(source.cfg.decoder)}
        cfg = apply_decoder_values(source.cfg, decoder)
        cfg = _with_input_size(cfg, startup["input_height"], startup["input_width"])
        self.declare_parameter(
            "class_names",
            list(cfg.dataset.class_names),
            ParameterDescriptor(
                description="name of each semantic class id (from the model file)", read_only=True
            ),
        )
        try:
            self.predictor = Predictor(source, device=startup["device"], backend=startup["backend"], cfg=cfg)
        except (RTPanopticError, RuntimeError) as error:
            raise StartupError(f"backend/device: {error}") from None
        self.publish_overlay: bool = runtime["publish_overlay"]
        self.overlay_alpha: float = runtime["overlay_alpha"]
        self.model_path = model_path
        self.device = startup["device"]
        self.void = void_label(cfg.dataset.num_classes)

        outputs = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_DEPTH, reliability=ReliabilityPolicy.RELIABLE
        )
        self.semantic_pub = self.create_publisher(Image, "panoptic/semantic", outputs)
        self.instance_pub = self.create_publisher(Image, "panoptic/instance", outputs)
        self.detections_pub = self.create_publisher(Detection2DArray, "panoptic/detections", outputs)
        self.overlay_pub = self.create_publisher(Image, "panoptic/overlay", outputs)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.slot = FrameSlot()
        self.input_rate, self.output_rate = RateWindow(), RateWindow()
        self.latency = LatencyWindow()
        self.rejected = 0
        self.frames_in = 0
        self._last_warning: dict[str, float] = {}
        self._warmup()

        reliability = (
            ReliabilityPolicy.RELIABLE
            if startup["qos_reliability"] == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        inputs = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=startup["qos_depth"], reliability=reliability
        )
        self.compressed: bool = startup["compressed"]
        topic = "image/compressed" if self.compressed else "image"
        message_type = CompressedImage if self.compressed else Image
        self.subscription = self.create_subscription(message_type, topic, self._on_image, inputs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._run, name="panoptic-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: {model_path.name} ({cfg.model.backbone}, {cfg.dataset.num_classes} classes) on "
            f"{self.predictor.backend.name}/{self.device}; listening on "
            f"{self.resolve_topic_name(topic)} ({startup['qos_reliability']}, depth {startup['qos_depth']})"
        )

    # --- parameters -------------------------------------------------------------------------

    def _declare(self, spec: ParamSpec) -> Any:
        """Declare ``spec`` with its descriptor; a bad start-up value raises :class:`StartupError`."""
        descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
        if spec.low is not None and isinstance(spec.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))
            ]
        elif spec.low is not None:
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=int(spec.step))
            ]
        if spec.choices:
            descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
        try:
            value = self.declare_parameter(spec.name, spec.default, descriptor).value
        except Exception as error:  # rclpy raises several types for a bad override
            raise StartupError(f"parameter {spec.name}: {_first_line(error)}") from None
        problem = check_value(spec, value)
        if problem:
            raise StartupError(f"parameter {problem}")
        return value

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Run-time changes: decoder thresholds and overlay settings, checked before applied."""
        specs = {s.name: s for s in (*RUNTIME_PARAMETERS, *decoder_parameters(self.predictor.cfg.decoder))}
        values = {}
        for parameter in parameters:
            spec = specs.get(parameter.name)
            if spec is None:
                continue  # read-only ones are refused by rclpy itself
            problem = check_value(spec, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            values[parameter.name] = parameter.value
        # One new config object, swapped in whole: the inference thread never sees a mix.
        self.predictor.cfg = apply_decoder_values(self.predictor.cfg, values)
        self.publish_overlay = values.get("publish_overlay", self.publish_overlay)
        self.overlay_alpha = float(values.get("overlay_alpha", self.overlay_alpha))
        if values:
            self.get_logger().info(f"parameters changed: {values}")
        return SetParametersResult(successful=True)

    # --- the hot path -----------------------------------------------------------------------

    def _on_image(self, message: Image | CompressedImage) -> None:
        """Subscription callback: hand the frame over and return (never blocks on inference)."""
        self.frames_in += 1
        self.input_rate.tick()
        self.slot.put(message)

    def _run(self) -> None:
        """Inference thread: take the newest frame, segment it, publish what is listened to."""
        while True:
            frame = self.slot.take()
            if frame is None:
                return
            try:
                self._process(frame.message, frame.received)
            except RTPanopticError as error:
                self.rejected += 1
                self._warn(type(error).__name__, f"frame rejected: {error}")
            except Exception as error:  # keep serving: one bad frame must not stop the robot
                self.rejected += 1
                self._warn(
                    type(error).__name__, f"frame failed: {type(error).__name__}: {_first_line(error)}"
                )

    def _process(self, message: Image | CompressedImage, received: float) -> None:
        publishers = (self.semantic_pub, self.instance_pub, self.detections_pub, self.overlay_pub)
        wanted = [p.get_subscription_count() > 0 for p in publishers]
        want_semantic, want_instance, want_detections, want_overlay = wanted
        want_overlay = want_overlay and self.publish_overlay
        if not (want_semantic or want_instance or want_detections or want_overlay):
            return  # nobody listens: no inference at all
        if self.compressed:
            rgb = image_conversion.compressed_to_rgb(message)
        else:
            rgb = image_conversion.image_to_rgb(message)
        result = self.predictor(rgb)
        header: Header = message.header
        semantic, instance = result.semantic.numpy(), result.instance.numpy()
        if want_semantic:
            self.semantic_pub.publish(image_conversion.semantic_to_msg(semantic, header))
        if want_instance:
            self.instance_pub.publish(image_conversion.instance_to_msg(instance, header))
        if want_detections:
            self.detections_pub.publish(detections_msg(header, result.segments))
        if want_overlay:
            overlay = draw_overlay(
                rgb,
                semantic,
                instance,
                result.segments,
                self.predictor.cfg.dataset.class_names,
                self.overlay_alpha,
            )
            self.overlay_pub.publish(image_conversion.rgb_to_msg(overlay, header))
        self.output_rate.tick()
        self.latency.add((time.monotonic() - received) * 1000)

    def _warmup(self) -> None:
        """One inference before "ready", so the first real frame does not pay for lazy set-up."""
        cfg = self.predictor.cfg.input
        size = (cfg.height or 256, cfg.width or 256)
        self.predictor(np.zeros((*size, 3), np.uint8))

    # --- reporting --------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        rejected, dropped = self.rejected, self.slot.dropped
        level, message = DiagnosticStatus.OK, "running"
        if rejected:
            level, message = DiagnosticStatus.WARN, f"{rejected} frame(s) rejected since start"
        values = {
            "input_rate_hz": self.input_rate.rate(),
            "output_rate_hz": self.output_rate.rate(),
            "latency_p50_ms": self.latency.percentile(50),
            "latency_p90_ms": self.latency.percentile(90),
            "frames_in": self.frames_in,
            "dropped": dropped,
            "rejected": rejected,
            "backend": self.predictor.backend.name,
            "device": self.device,
            "model": str(self.model_path),
        }
        header = Header(stamp=self.get_clock().now().to_msg())
        name = f"{self.get_fully_qualified_name()}: panoptic segmentation"
        self.diagnostics_pub.publish(diagnostics_msg(header, name, self.device, level, message, values))

    def _warn(self, key: str, text: str) -> None:
        """A warning at most every :data:`WARN_THROTTLE_S` seconds per kind of problem."""
        now = time.monotonic()
        if now - self._last_warning.get(key, -WARN_THROTTLE_S) >= WARN_THROTTLE_S:
            self._last_warning[key] = now
            self.get_logger().warning(f"{text} ({self.rejected} rejected so far)")

    def shutdown(self) -> None:
        """Stop the inference thread (the current frame finishes)."""
        self.slot.close()
        self._worker.join(timeout=10.0)


def _with_input_size(cfg: Config, height: int, width: int) -> Config:
    """``cfg`` with the network input size the node's parameters ask for (0, 0 = the image's)."""
    if height == cfg.input.height and width == cfg.input.width:
        return cfg
    if bool(height) != bool(width):
        raise StartupError(
            "parameter input_height/input_width: set both or neither (0 = the image's own size)"
        )
    return dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, height=height, width=width))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(args: list[str] | None = None) -> int:
    """``panoptic_node``: run until Ctrl-C / SIGTERM; exit 1 with one line if it cannot start."""
    rclpy.init(args=args)
    node = None
    try:
        node = PanopticNode()
        rclpy.spin(node)
    except StartupError as error:
        print(f"[{NODE_NAME}] error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

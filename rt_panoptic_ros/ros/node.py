"""The panoptic node: camera images in, panoptic segmentation out (ROS 2, rclpy).

This file only wires ROS to plain, separately tested pieces: the frame pipeline
(``pipeline.py``: keep-latest slot, convert / infer / publish stages on their own threads),
the output contract (``outputs.py``: topics, depth, result -> messages), parameters
(``parameters.py``), image conversions (``image_conversion.py``), statistics (``stats.py``),
the input QoS choice (``qos.py``), the transport-loss estimate (``transport_stats.py``), the
Fast DDS profile (``dds_profile.py``) and the :class:`~rt_panoptic_ros.runtime.Predictor`.

Topics (relative, so namespaces and remapping work):

- in: ``image`` (``sensor_msgs/Image``) or, with ``compressed:=true``, ``image/compressed``;
- out: ``panoptic/semantic`` (mono8 class ids, 255 = void; mono16 for > 255 classes),
  ``panoptic/instance`` (mono16, 0 = none, k = detection ``id`` k),
  ``panoptic/detections`` (``vision_msgs/Detection2DArray``), ``panoptic/overlay`` (rgb8),
  and ``/diagnostics`` at 1 Hz.

Every output carries the input's header and size. Conversion, inference and publishing run on
their own threads behind a keep-latest slot and overlap across frames; outputs nobody
subscribes to are not computed. The input's reliability
follows the camera's (``qos_reliability:=auto``) and ``main`` gives the process the shipped
Fast DDS profile for large images before it creates its DDS participant.
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
from rclpy._rclpy_pybind11 import RCLError
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import RTPanopticError
from rt_panoptic_ros.panoptic.fusion import void_label
from rt_panoptic_ros.ros import image_conversion
from rt_panoptic_ros.ros.bundled import bundled_model_path
from rt_panoptic_ros.ros.dds_profile import ProfileChoice, use_shipped_profile
from rt_panoptic_ros.ros.messages import diagnostics_msg, label_info_msg
from rt_panoptic_ros.ros.outputs import (
    LABEL_INFO_TOPIC,
    OUTPUT_DEPTH,
    OUTPUT_TOPICS,
    output_messages,
    overlay_message,
)
from rt_panoptic_ros.ros.parameters import (
    RUNTIME_PARAMETERS,
    STARTUP_PARAMETERS,
    ParamSpec,
    apply_decoder_values,
    check_value,
    decoder_parameters,
)
from rt_panoptic_ros.ros.pipeline import STAGES, FramePipeline, Job
from rt_panoptic_ros.ros.qos import BEST_EFFORT, BEST_EFFORT_HINT, RELIABLE, InputQos, choose_input_qos
from rt_panoptic_ros.ros.stats import RateWindow
from rt_panoptic_ros.ros.transport_stats import TransportLoss
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.runtime.sources import ModelSource

NODE_NAME = "panoptic_node"
#: Seconds between two looks at the input's publishers (``qos_reliability:=auto``): a camera
#: that appears or changes its QoS is followed within this time; the look itself reads the
#: local graph cache (microseconds).
INPUT_QOS_CHECK_S = 0.5
#: Longest time the previous input subscription is kept after a QoS change while the new one
#: is being matched (discovery between two processes here: ~0.1 s), so no frame falls between.
RETIRE_AFTER_S = 2.0
#: Seconds between two identical warnings about bad input (a broken camera floods otherwise).
WARN_THROTTLE_S = 5.0


class StartupError(RTPanopticError):
    """The node cannot start (bad parameter, missing model); one line says why."""


class PanopticNode(Node):
    """Real-time panoptic segmentation of a camera stream."""

    def __init__(
        self, dds_profile: ProfileChoice | None = None, infer_in_caller: bool = False, **kwargs: Any
    ) -> None:
        """``dds_profile``: what :func:`main` chose for this process (``None``: hosted elsewhere).
        ``infer_in_caller``: :func:`main` runs inference in its own (main) thread, see ``pipeline.py``."""
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
            self.predictor = Predictor(
                source, device=startup["device"], backend=startup["backend"], cfg=cfg,
                precision=None if startup["precision"] == "auto" else startup["precision"],
                calibration_dir=startup["calibration_dir"] or None,
            )  # fmt: skip
        except (RTPanopticError, RuntimeError) as error:
            raise StartupError(f"backend/device: {error}") from None
        self.publish_overlay: bool = runtime["publish_overlay"]
        self.overlay_alpha: float = runtime["overlay_alpha"]
        self.overlay_scale: float = runtime["overlay_scale"]
        self.model_path = model_path
        self.device = startup["device"]
        self.void = void_label(cfg.dataset.num_classes)

        self.dds_profile = dds_profile.describe() if dds_profile else "chosen by the hosting process"
        self.output_qos = f"{startup['output_reliability']}, keep last {OUTPUT_DEPTH}"
        outputs = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=OUTPUT_DEPTH,
            reliability=ReliabilityPolicy.RELIABLE
            if startup["output_reliability"] == RELIABLE
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self.publishers_by_output = {
            name: self.create_publisher(kind, topic, outputs) for name, (topic, kind) in OUTPUT_TOPICS.items()
        }
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )  # fmt: skip
        self.label_info_pub = self.create_publisher(LabelInfo, LABEL_INFO_TOPIC, latched)
        self._publish_label_info(cfg)

        self.input_rate = RateWindow()
        self.rejected = 0
        self.frames_in = 0
        self.transport = TransportLoss()
        self.dds_lost = 0
        self._last_warning: dict[str, float] = {}
        self._stopping = False
        self._warmup()

        self.compressed: bool = startup["compressed"]
        self.max_input_pixels: int = startup["max_input_pixels"]
        self.pipeline = FramePipeline(
            self.predictor, cfg, self._convert, self._wanted, self._publish, self._on_frame_error,
            stopping=lambda: self._stopping or not self.context.ok(), infer_in_caller=infer_in_caller,
        )  # fmt: skip
        self.input_topic = "image/compressed" if self.compressed else "image"
        self.input_type = CompressedImage if self.compressed else Image
        self.qos_setting: str = startup["qos_reliability"]
        self.qos_depth: int = startup["qos_depth"]
        self.subscription = None
        self._retiring: tuple[Any, float] | None = None  # (old subscription, since)
        self._last_frame: tuple[str, int] | None = None
        self.input_qos: InputQos | None = None
        self.input_publishers = 0
        self._update_input_qos()
        self.create_timer(INPUT_QOS_CHECK_S, self._update_input_qos)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"ready: {model_path.name} ({cfg.model.backbone}, {cfg.dataset.num_classes} classes) on "
            f"{self.predictor.backend.name}/{self.device} ({self.predictor.backend.precision}); listening on "
            f"{self.resolve_topic_name(self.input_topic)} ({self.input_qos.describe()}, depth "
            f"{self.qos_depth}); outputs {self.output_qos}; {self.dds_profile}"
        )

    # --- input QoS --------------------------------------------------------------------------

    def _update_input_qos(self) -> None:
        """(Re)subscribe with the reliability that suits the input's publishers (qos.py).

        Runs at start-up and every :data:`INPUT_QOS_CHECK_S`; the subscription is replaced only
        when the reliability changes. The previous one stays until the new one has matched the
        publishers (or :data:`RETIRE_AFTER_S`), so no frame falls between the two; a frame that
        both deliver meanwhile is taken once (``_on_image``).
        """
        topic = self.resolve_topic_name(self.input_topic)
        publishers = [
            _reliability(info.qos_profile.reliability) for info in self.get_publishers_info_by_topic(topic)
        ]
        if self._retiring is not None:
            old, since = self._retiring
            matched = self.subscription.get_publisher_count() >= len(publishers)
            if matched or time.monotonic() - since > RETIRE_AFTER_S:
                self.destroy_subscription(old)
                self._retiring = None
        current = self.input_qos.reliability if self.input_qos else None
        choice = choose_input_qos(self.qos_setting, publishers, current)
        self.input_publishers = len(publishers)
        if choice == self.input_qos:
            return
        if self.input_qos is None or choice.reliability != self.input_qos.reliability:
            reliability = (
                ReliabilityPolicy.RELIABLE
                if choice.reliability == RELIABLE
                else ReliabilityPolicy.BEST_EFFORT
            )
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.qos_depth, reliability=reliability)
            previous = self.subscription
            # A publisher that cannot match (best effort to a reliable subscription) is a reason
            # to look again now, not a warning: auto follows it, explicit settings warn once.
            # Samples DDS itself saw lost (best effort: a sequence gap, or fragments that never
            # completed) are counted beside the estimate from the camera's stamps.
            events = SubscriptionEventCallbacks(
                incompatible_qos=lambda _: self._update_input_qos(), message_lost=self._on_message_lost
            )
            self.subscription = self.create_subscription(
                self.input_type, self.input_topic, self._on_image, qos, event_callbacks=events
            )
            if self._retiring is not None:  # changed again before the last one retired
                self.destroy_subscription(self._retiring[0])
                self._retiring = None
            if previous is not None:
                self._retiring = (previous, time.monotonic())
        if self.input_qos is not None:  # the first choice is in the "ready" line
            self.get_logger().info(
                f"input QoS on {topic}: {choice.describe()}" + (f"; {choice.hint}" if choice.hint else "")
            )
        if choice.warning:
            self.get_logger().warning(f"input QoS on {topic}: {choice.warning}")
        self.input_qos = choice

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
        specs = {s.name: s for s in (*RUNTIME_PARAMETERS, *decoder_parameters(self.pipeline.cfg.decoder))}
        values = {}
        for parameter in parameters:
            spec = specs.get(parameter.name)
            if spec is None:
                continue  # read-only ones are refused by rclpy itself
            problem = check_value(spec, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            values[parameter.name] = parameter.value
        # One new config object, swapped in whole: a frame never sees a mix.
        previous = self.pipeline.cfg
        self.pipeline.set_config(apply_decoder_values(previous, values))
        if self.pipeline.cfg.decoder.instance_score_thresh != previous.decoder.instance_score_thresh:
            self._publish_label_info(self.pipeline.cfg)
        self.publish_overlay = values.get("publish_overlay", self.publish_overlay)
        self.overlay_alpha = float(values.get("overlay_alpha", self.overlay_alpha))
        self.overlay_scale = float(values.get("overlay_scale", self.overlay_scale))
        if values:
            self.get_logger().info(f"parameters changed: {values}")
        return SetParametersResult(successful=True)

    # --- the hot path -----------------------------------------------------------------------

    def _on_image(self, message: Image | CompressedImage) -> None:
        """Subscription callback: hand the frame over and return (never blocks on inference)."""
        stamp = message.header.stamp
        frame = (message.header.frame_id, stamp.sec * 1_000_000_000 + stamp.nanosec)
        if self._retiring is not None and frame == self._last_frame:
            return  # the same frame from the old and the new subscription during a QoS change
        self._last_frame = frame
        self.frames_in += 1
        self.input_rate.tick()
        self.transport.add(frame[1], frame[0])
        self.pipeline.put(message)

    def _on_message_lost(self, event: Any) -> None:
        self.dds_lost += event.total_count_change

    def _wanted(self) -> list[str]:
        """The outputs someone subscribes to now (the overlay only if it is switched on)."""
        return [
            name
            for name, publisher in self.publishers_by_output.items()
            if publisher.get_subscription_count() > 0 and (name != "overlay" or self.publish_overlay)
        ]

    def _convert(self, message: Image | CompressedImage) -> np.ndarray:
        image_conversion.check_pixels(message, self.max_input_pixels)  # before decoding anything
        if self.compressed:
            return image_conversion.compressed_to_rgb(message)
        return image_conversion.image_to_rgb(message)

    def _publish(self, job: Job) -> None:
        """Build the frame's messages (the overlay timed on its own) and publish them."""
        header: Header = job.message.header
        class_names = job.cfg.dataset.class_names
        messages = output_messages(header, job.rgb, job.result, job.wanted - {"overlay"}, class_names, 0.0)
        if "overlay" in job.wanted:
            started = time.perf_counter()
            messages["overlay"] = overlay_message(
                header, job.rgb, job.result, class_names, self.overlay_alpha, self.overlay_scale
            )
            job.times["overlay"] = (time.perf_counter() - started) * 1000
        for name, message in messages.items():
            self.publishers_by_output[name].publish(message)

    def _on_frame_error(self, stage: str, error: BaseException) -> None:
        """A frame failed in ``stage``: counted, warned about (throttled); the node keeps serving."""
        self.rejected += 1
        if isinstance(error, RTPanopticError):
            self._warn(type(error).__name__, f"frame rejected: {error}")
        else:
            self._warn(
                type(error).__name__, f"frame failed in {stage}: {type(error).__name__}: {_first_line(error)}"
            )

    def _publish_label_info(self, cfg: Config) -> None:
        """``panoptic/label_info`` (latched): the model's classes and the instance threshold."""
        header = Header(stamp=self.get_clock().now().to_msg())
        message = label_info_msg(
            header, cfg.dataset.class_names, self.void, cfg.decoder.instance_score_thresh
        )
        self.label_info_pub.publish(message)

    def _warmup(self) -> None:
        """One inference before "ready", so the first real frame does not pay for lazy set-up."""
        cfg = self.predictor.cfg.input
        size = (cfg.height or 256, cfg.width or 256)
        self.predictor(np.zeros((*size, 3), np.uint8))

    # --- reporting --------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        pipeline = self.pipeline
        rejected, dropped, lost = self.rejected, pipeline.dropped, self.transport.lost
        problems = []
        if rejected:
            problems.append(f"{rejected} frame(s) rejected since start")
        if lost:
            problems.append(f"~{lost} frame(s) lost in transport since start (gaps in the camera's stamps)")
        if self.dds_lost:
            problems.append(f"{self.dds_lost} sample(s) lost by DDS since start")
        if (lost or self.dds_lost) and self.input_qos.reliability == BEST_EFFORT:
            problems.append(BEST_EFFORT_HINT)
        if self.input_qos.warning:
            problems.append(self.input_qos.warning)
        level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        message = "; ".join(problems) or "running"
        values = {
            "input_rate_hz": self.input_rate.rate(),
            "output_rate_hz": pipeline.output_rate.rate(),
            "latency_p50_ms": pipeline.latency.percentile(50),
            "latency_p90_ms": pipeline.latency.percentile(90),
            **{f"{stage}_p50_ms": pipeline.stage_times[stage].percentile(50) for stage in STAGES},
            "frames_in": self.frames_in,
            "frames_out": pipeline.frames_out,
            "dropped": dropped,
            "rejected": rejected,
            "lost_in_transport": lost,
            "dds_samples_lost": self.dds_lost,
            "input_period_ms": self.transport.period_ms(),
            "input_qos": self.input_qos.describe(),
            "input_publishers": self.input_publishers,
            "output_qos": self.output_qos,
            "dds_profile": self.dds_profile,
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
        """Stop the pipeline's threads (their current step finishes, nothing more is published)."""
        self._stopping = True
        self.pipeline.close()


def _with_input_size(cfg: Config, height: int, width: int) -> Config:
    """``cfg`` with the network input size the node's parameters ask for.

    0, 0 keeps the model file's own input size: a model trained at one scale (the bundled one
    at 128x256) must see that scale; a model without one takes each image's own size.
    """
    if bool(height) != bool(width):
        raise StartupError(
            "parameter input_height/input_width: set both or neither (0 = the model file's own size)"
        )
    if not height or (height == cfg.input.height and width == cfg.input.width):
        return cfg
    return dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, height=height, width=width))


def _reliability(policy: ReliabilityPolicy) -> str:
    """A publisher's reliability as :func:`~rt_panoptic_ros.ros.qos.choose_input_qos` takes it."""
    if policy == ReliabilityPolicy.RELIABLE:
        return "reliable"
    if policy == ReliabilityPolicy.BEST_EFFORT:
        return "best_effort"
    return policy.name.lower()  # unknown, system_default: treated as not reliable


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(args: list[str] | None = None) -> int:
    """``panoptic_node``: run until Ctrl-C / SIGTERM; exit 1 with one line if it cannot start.

    Before ``rclpy.init`` creates the process's DDS participant, the shipped Fast DDS profile
    is given to it unless a profile is already set or ``RT_PANOPTIC_DDS_PROFILE=off``
    (``dds_profile.py``). The main thread runs inference (torch is fastest there,
    ``pipeline.py``); ROS callbacks are spun on another thread.
    """
    profile = use_shipped_profile()
    try:
        rclpy.init(args=args)
    except RCLError as error:  # rcl's own argument parsing: a bad --params-file, "-p name"
        print(f"[{NODE_NAME}] error: ROS arguments: {_first_line(error)}", file=sys.stderr)
        return 1
    node = None
    try:
        node = PanopticNode(dds_profile=profile, infer_in_caller=True)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=_spin, args=(executor, node), name="ros-spin", daemon=True)
        spinner.start()
        node.pipeline.run_inference()  # until the spinner stops the pipeline
        spinner.join()
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


def _spin(executor: SingleThreadedExecutor, node: PanopticNode) -> None:
    """ROS callbacks until shutdown (Ctrl-C, SIGTERM); then stop the node's pipeline."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()


if __name__ == "__main__":
    sys.exit(main())

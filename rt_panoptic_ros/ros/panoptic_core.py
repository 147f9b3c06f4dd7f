"""What both panoptic nodes do, on a node handed in: parameters, model, outputs, input, reports.

:class:`PanopticCore` is built on an rclpy ``Node`` (``node.py``, started at once) or a
``LifecycleNode`` (``lifecycle_node.py``, built on configure): it declares and checks the
parameters, loads the model into a :class:`~rt_panoptic_ros.runtime.Predictor` and warms it
up, creates each camera's output publishers (``camera_io.py``; one camera, or several through
the one model with ``cameras``) and the frame pipeline (``pipeline.py``). :meth:`start`
subscribes to the inputs (reliability following each camera's, ``qos.py``) and starts the
diagnostics (one status per camera); :meth:`stop` takes no more frames (outputs idle);
:meth:`close` also joins the pipeline's threads and lets go of the model, publishers and
parameter callback.
"""

from __future__ import annotations

import gc
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from rt_panoptic_ros.allocator import give_back_free_memory, process_choice
from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import RTPanopticError, first_line
from rt_panoptic_ros.panoptic.fusion import void_label
from rt_panoptic_ros.ros import image_conversion
from rt_panoptic_ros.ros.bundled import bundled_model_path
from rt_panoptic_ros.ros.camera_io import CameraIO, camera_status
from rt_panoptic_ros.ros.dds_profile import ProfileChoice
from rt_panoptic_ros.ros.messages import label_info_msg, stamp_ns
from rt_panoptic_ros.ros.outputs import OUTPUT_DEPTH, output_messages, overlay_message
from rt_panoptic_ros.ros.parameters import (
    RUNTIME_PARAMETERS,
    STARTUP_PARAMETERS,
    ParamSpec,
    apply_decoder_values,
    check_value,
    decoder_parameters,
    tracking_settings,
)
from rt_panoptic_ros.ros.pipeline import FramePipeline, Job
from rt_panoptic_ros.ros.qos import RELIABLE
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.runtime.sources import ModelSource
from rt_panoptic_ros.tracking import TrackingSettings

NODE_NAME = "panoptic_node"
#: String-array parameters fixed at start-up (declared writable, see ``_declare_string_array``).
_FIXED_ARRAYS = ("cameras",)
#: Seconds between two identical warnings about bad input (a broken camera floods otherwise).
WARN_THROTTLE_S = 5.0


class StartupError(RTPanopticError):
    """The node cannot start (bad parameter, missing model); one line says why."""


class PanopticCore:
    """Real-time panoptic segmentation of one or several camera streams, wired onto ``node``.

    Construction is the node's configuration (raises :class:`StartupError` with one line);
    frames are taken only between :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self, node: Node, dds_profile: ProfileChoice | None = None, infer_in_caller: bool = False
    ) -> None:
        """``dds_profile``: what the process chose (``None``: hosted elsewhere).
        ``infer_in_caller``: the caller runs inference in its own thread, see ``pipeline.py``."""
        self.node = node
        self.pipeline: FramePipeline | None = None
        self.cameras: dict[str, CameraIO] = {}  # "" for the single camera of ``cameras: []``
        self.diagnostics_pub = None
        self._timers: list[Any] = []
        self._parameter_callback = None
        self.active = False
        self._stopping = False
        try:
            self._configure(dds_profile, infer_in_caller)
        except BaseException:
            self.close()
            raise

    def _configure(self, dds_profile: ProfileChoice | None, infer_in_caller: bool) -> None:
        node = self.node
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
        if not node.has_parameter("class_names"):  # read-only: a lifecycle node keeps the first
            node.declare_parameter(
                "class_names",
                list(cfg.dataset.class_names),
                ParameterDescriptor(
                    description="name of each semantic class id (from the model file)", read_only=True
                ),
            )
        # Loading and warming up run torch ops; on a thread that ends with them, so that the
        # OpenMP team torch gives that thread ends too (a live one slows the infer thread's
        # parallel ops, ``pipeline.py``): the lifecycle node configures on its executor's thread.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="panoptic-load") as loader:
            try:
                self.predictor = loader.submit(
                    Predictor, source, device=startup["device"], backend=startup["backend"], cfg=cfg,
                    precision=None if startup["precision"] == "auto" else startup["precision"],
                    calibration_dir=startup["calibration_dir"] or None,
                ).result()  # fmt: skip
            except (RTPanopticError, RuntimeError) as error:
                raise StartupError(f"backend/device: {error}") from None
            loader.submit(self._warmup).result()
        self.publish_overlay: bool = runtime["publish_overlay"]
        self.overlay_alpha: float = runtime["overlay_alpha"]
        self.overlay_scale: float = runtime["overlay_scale"]
        self.model_path = model_path
        self.device = startup["device"]
        self.void = void_label(cfg.dataset.num_classes)

        self.dds_profile = dds_profile.describe() if dds_profile else "chosen by the hosting process"
        self.malloc = process_choice().describe()  # set by the process's main (allocator.py)
        self.output_qos = f"{startup['output_reliability']}, keep last {OUTPUT_DEPTH}"
        outputs = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=OUTPUT_DEPTH,
            reliability=ReliabilityPolicy.RELIABLE
            if startup["output_reliability"] == RELIABLE
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self.compressed: bool = startup["compressed"]
        for name in startup["cameras"] or [""]:
            self.cameras[name] = CameraIO(
                node, name, self.compressed, startup["qos_reliability"], startup["qos_depth"],
                outputs, self._on_image,
            )  # fmt: skip
        self.diagnostics_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publish_label_info(cfg)

        self._last_warning: dict[str, float] = {}

        self.max_input_pixels: int = startup["max_input_pixels"]
        self.tracking = tracking_settings(runtime, TrackingSettings())
        self.pipeline = FramePipeline(
            self.predictor, cfg, self._convert, self._wanted, self._publish, self._on_frame_error,
            stopping=lambda: self._stopping or not node.context.ok(), infer_in_caller=infer_in_caller,
            cameras=tuple(self.cameras), batch_wait_s=startup["batch_wait_ms"] / 1000,
            tracking=self.tracking, stamp_of=lambda message: stamp_ns(message.header),
        )  # fmt: skip
        self._parameter_callback = self._on_set_parameters  # the same object, to remove it
        node.add_on_set_parameters_callback(self._parameter_callback)
        backend = self.predictor.backend
        self.describe = (
            f"{model_path.name} ({cfg.model.backbone}, {cfg.dataset.num_classes} classes) on "
            f"{backend.name}/{self.device} ({backend.precision})"
        )

    # --- taking frames ------------------------------------------------------------------------

    def start(self) -> str:
        """Subscribe to the inputs and start the diagnostics; returns where it listens (one line)."""
        self.active = True
        self.pipeline.reset_tracks()  # after a pause, old tracks would match unrelated objects
        listening = ", ".join(camera.open() for camera in self.cameras.values())
        self._timers = [self.node.create_timer(1.0, self._publish_diagnostics)]
        return f"listening on {listening}; outputs {self.output_qos}; {self.dds_profile}; {self.malloc}"

    def stop(self) -> None:
        """Take no more frames: the subscriptions and timers go; a frame in flight is dropped."""
        self.active = False
        for timer in self._timers:
            self.node.destroy_timer(timer)
        self._timers = []
        for camera in self.cameras.values():
            camera.close()

    def close(self) -> None:
        """:meth:`stop`, join the pipeline's threads, let go of publishers, model and callback."""
        self.stop()
        self._stopping = True
        if self.pipeline is not None:
            self.pipeline.close()
        if self._parameter_callback is not None:
            self.node.remove_on_set_parameters_callback(self._parameter_callback)
        for camera in self.cameras.values():
            camera.destroy()
        if self.diagnostics_pub is not None:
            self.node.destroy_publisher(self.diagnostics_pub)
        self.cameras, self.diagnostics_pub, self._parameter_callback = {}, None, None
        self.pipeline = self.predictor = None

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
            if isinstance(spec.default, list):  # rclpy cannot tell an empty list's type
                value = self._declare_string_array(spec, descriptor)
            elif self.node.has_parameter(spec.name):  # a lifecycle node configured again
                value = self.node.get_parameter(spec.name).value
            else:
                value = self.node.declare_parameter(spec.name, spec.default, descriptor).value
        except Exception as error:  # rclpy raises several types for a bad override
            raise StartupError(f"parameter {spec.name}: {first_line(error)}") from None
        problem = check_value(spec, value)
        if problem:
            raise StartupError(f"parameter {problem}")
        return value

    def _declare_string_array(self, spec: ParamSpec, descriptor: ParameterDescriptor) -> list[str]:
        """Declare a string-array parameter typed as such, set to ``spec.default`` unless overridden.

        Not marked read-only (it could not be given its default then): :meth:`_on_set_parameters`
        refuses changes to it instead. An empty array set as its value reads back as not set,
        so a lifecycle node configured again finds it declared and still uninitialized.
        """
        if not self.node.has_parameter(spec.name):
            self.node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, descriptor)
        try:
            return list(self.node.get_parameter(spec.name).value)
        except ParameterUninitializedException:
            self.node.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, spec.default)])
            return list(spec.default)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Run-time changes: decoder thresholds and overlay settings, checked before applied."""
        specs = {s.name: s for s in (*RUNTIME_PARAMETERS, *decoder_parameters(self.pipeline.cfg.decoder))}
        values = {}
        for parameter in parameters:
            if parameter.name in _FIXED_ARRAYS:
                return SetParametersResult(successful=False, reason=f"{parameter.name} is fixed at start-up")
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
        tracking = tracking_settings(values, self.tracking)
        if tracking != self.tracking:
            self.pipeline.set_tracking(tracking)
            self.tracking = tracking
        if values:
            self.node.get_logger().info(f"parameters changed: {values}")
        return SetParametersResult(successful=True)

    # --- the hot path -----------------------------------------------------------------------

    def _on_image(self, camera: str, message: Image | CompressedImage) -> None:
        """A new frame of ``camera`` (its input's callback): handed over, never blocks on inference."""
        if self.active:
            self.pipeline.put(message, camera)

    def _wanted(self, camera: str) -> list[str]:
        """``camera``'s outputs someone subscribes to now (the overlay only if it is switched on)."""
        if not self.active:
            return []
        return self.cameras[camera].wanted(self.publish_overlay)

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
                header, job.rgb, job.result, class_names, self.overlay_alpha, self.overlay_scale,
                job.device_maps,
            )  # fmt: skip
            job.times["overlay"] = (time.perf_counter() - started) * 1000
        publishers = self.cameras[job.camera].publishers
        for name, message in messages.items():
            if not self.active:  # stopped while this frame was in flight: outputs stay idle
                return
            publishers[name].publish(message)

    def _on_frame_error(self, stage: str, error: BaseException) -> None:
        """A frame failed in ``stage`` (counted by the pipeline): warned about (throttled)."""
        if isinstance(error, RTPanopticError):
            self._warn(type(error).__name__, f"frame rejected: {error}")
        else:
            self._warn(
                type(error).__name__, f"frame failed in {stage}: {type(error).__name__}: {first_line(error)}"
            )

    def _publish_label_info(self, cfg: Config) -> None:
        """``panoptic/label_info`` (latched, per camera): the classes and the instance threshold."""
        header = Header(stamp=self.node.get_clock().now().to_msg())
        message = label_info_msg(
            header, cfg.dataset.class_names, self.void, cfg.decoder.instance_score_thresh
        )
        for camera in self.cameras.values():
            camera.label_info_pub.publish(message)

    def _warmup(self) -> None:
        """One inference before "ready", so the first real frame does not pay for lazy set-up."""
        cfg = self.predictor.cfg.input
        size = (cfg.height or 256, cfg.width or 256)
        self.predictor(np.zeros((*size, 3), np.uint8))

    # --- reporting --------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        """``/diagnostics``: one status per camera (``camera_io.camera_status``)."""
        common = {
            "output_qos": self.output_qos,
            "dds_profile": self.dds_profile,
            "malloc": self.malloc,
            "backend": self.predictor.backend.name,
            "device": self.device,
            "model": str(self.model_path),
        }
        statuses = [camera_status(c, self.pipeline, self.device, common) for c in self.cameras.values()]
        header = Header(stamp=self.node.get_clock().now().to_msg())
        self.diagnostics_pub.publish(DiagnosticArray(header=header, status=statuses))

    def _warn(self, key: str, text: str) -> None:
        """A warning at most every :data:`WARN_THROTTLE_S` seconds per kind of problem."""
        now = time.monotonic()
        if now - self._last_warning.get(key, -WARN_THROTTLE_S) >= WARN_THROTTLE_S:
            self._last_warning[key] = now
            rejected = sum(c.rejected for c in self.pipeline.cameras.values())
            self.node.get_logger().warning(f"{text} ({rejected} rejected so far)")

    def shutdown(self) -> None:
        """Stop the pipeline's threads (their current step finishes, nothing more is published)."""
        self._stopping = True
        self.pipeline.close()


def release_memory() -> None:
    """Return what a closed core held: collect garbage, empty torch's CUDA cache if it has one."""
    gc.collect()
    give_back_free_memory()
    torch = sys.modules.get("torch")  # imported by the backend, if at all
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


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
    return cfg.with_input_size(height, width)

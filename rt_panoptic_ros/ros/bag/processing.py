"""Offline panoptic segmentation of a recorded image topic: a bag in, a bag of outputs out.

Every frame of the topic is segmented (offline means complete: nothing is dropped, unlike the
node's keep-latest slot) and the node's outputs are written on the node's topic names in the
image topic's namespace (:func:`output_topics`), each with the input's header and the input's
bag time. Three threads overlap the work, so the tool runs at the model's speed:

    reader thread        main thread           writer thread
    bag -> CDR -> rclpy  Predictor (the model) messages -> CDR -> bag
    message -> RGB

Raw CDR bytes become real rclpy messages with ``rclpy.serialization`` (2 ms for a 512x1024
rgb8 frame), so :mod:`~rt_panoptic_ros.ros.image_conversion`, :func:`detections_msg` and
:func:`draw_overlay` are the node's own, not a second implementation. A frame that cannot be
decoded is skipped and reported with its bag time; the rest is still processed. Ctrl-C stops
reading, the frames already segmented are written, and the bag is closed: a valid bag.

Instances are tracked as the node tracks them (on by default, :mod:`rt_panoptic_ros.tracking`):
the frames are segmented in bag-time order, so the written ids are the ids the node would
publish on a replay that loses no frame.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from rt_panoptic_ros.errors import ImageError, RTPanopticError, first_line
from rt_panoptic_ros.interrupts import deferred_interrupts
from rt_panoptic_ros.panoptic import PanopticResult
from rt_panoptic_ros.panoptic.fusion import void_label
from rt_panoptic_ros.ros.bag.storage import (
    BagError,
    InputBag,
    OutputBag,
    check_output_path,
    output_qos,
    ros_type_name,
)
from rt_panoptic_ros.ros.image_conversion import (
    compressed_to_rgb,
    image_to_rgb,
)
from rt_panoptic_ros.ros.messages import label_info_msg, stamp_ns
from rt_panoptic_ros.ros.outputs import LABEL_INFO_TOPIC, OUTPUT_DEPTH, OUTPUT_TOPICS, output_messages
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.tracking import DEFAULT_TRACKING, PanopticTracker, TrackingSettings

#: Frames waiting between two threads. Two keep the model busy while the next frame is
#: decoded and the last one written; more would only hold more decoded images in memory.
QUEUE_DEPTH = 2
_END = object()  # the reader's last item, and the main thread's last item for the writer
_POLL_S = 0.1  # how often a blocked reader checks whether it should stop


@dataclass
class Frame:
    """A decoded input frame: its bag time (ns), header, and ``uint8 [H, W, 3]`` RGB pixels."""

    timestamp: int
    header: Header
    rgb: np.ndarray


@dataclass
class Skipped:
    """A message that could not be segmented: its bag time (ns) and why."""

    timestamp: int
    reason: str


@dataclass
class _ReadFailure:
    """The bag itself became unreadable (a corrupt chunk, a vanished file) after ``timestamp``."""

    error: BaseException
    timestamp: int | None


@dataclass
class BagReport:
    """What a run wrote.

    Attributes:
        output: the output bag.
        topics: output name (``semantic``, ...) -> absolute topic in the output bag.
        total: messages of the image topic in the selected range.
        written: frames whose outputs are in the bag (one message per topic each).
        skipped: frames that could not be decoded or segmented, in bag-time order.
        seconds: wall time from the first frame read to the bag closed.
        interrupted: stopped by Ctrl-C / SIGTERM before the end of the range.
        discarded: writing failed and the unfinished bag was removed (no output bag).
    """

    output: Path
    topics: dict[str, str]
    total: int
    written: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    discarded: bool = False

    @property
    def fps(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def output_topics(image_topic: str, compressed: bool, overlay: bool) -> dict[str, str]:
    """The node's output topics resolved in the namespace of ``image_topic``.

    ``/cam/image`` -> ``/cam/panoptic/semantic``, ...: as if the node ran in ``/cam`` with its
    ``image`` input remapped to the topic. For a ``CompressedImage`` topic, image_transport's
    ``/compressed`` suffix is dropped first (``/cam/image/compressed`` -> ``/cam``).
    """
    namespace = topic_namespace(image_topic, compressed)
    return {
        name: f"{namespace}/{relative}"
        for name, (relative, _) in OUTPUT_TOPICS.items()
        if overlay or name != "overlay"
    }


def topic_namespace(image_topic: str, compressed: bool) -> str:
    """The namespace a node subscribed to ``image_topic`` as its ``image`` input would be in
    (``/cam/image`` -> ``/cam``, ``/image`` -> ``""``)."""
    base = "/" + image_topic.strip("/")
    if compressed and base.endswith("/compressed"):
        base = base[: -len("/compressed")]
    return base.rsplit("/", 1)[0]


def time_range(bag_start: int, start_s: float, duration_s: float | None) -> tuple[int | None, int | None]:
    """``[start, stop)`` in bag time (ns) for an offset from the bag's first message and a length.

    Raises:
        BagError: a negative start or a duration that is not positive.
    """
    if start_s < 0:
        raise BagError(f"--start {start_s}: must be >= 0 (seconds after the bag's first message)")
    if duration_s is not None and duration_s <= 0:
        raise BagError(f"--duration {duration_s}: must be > 0 seconds")
    start = bag_start + round(start_s * 1e9) if start_s else None
    stop = (start or bag_start) + round(duration_s * 1e9) if duration_s is not None else None
    return start, stop


def format_stamp(timestamp: int, bag_start: int) -> str:
    """``1700000000.300000000 (+0.300 s)``: a bag time as ROS prints stamps, and its offset."""
    seconds, nanoseconds = divmod(timestamp, 1_000_000_000)
    return f"{seconds}.{nanoseconds:09d} (+{(timestamp - bag_start) / 1e9:.3f} s)"


class BagJob:
    """One image topic of one bag, checked and ready to segment into a new bag.

    The constructor does every check that needs no model (the input is a bag, the topic is
    there and holds images, the range holds frames, the output may be written), so that a
    mistake costs no model loading. :meth:`run` does the work.

    Args:
        source: input bag (folder, or a bare ``.db3`` / ``.mcap`` file).
        destination: output bag folder; written in the input's storage format.
        image_topic: a ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` topic.
        overlay: also write ``panoptic/overlay``.
        overlay_alpha: weight of the colours in the overlay (the node's ``overlay_alpha``).
        start_s, duration_s: the range, in seconds from the bag's first message.
        overwrite: replace an existing bag at ``destination``.
        tracking: track instances across the frames (as the node does); ``None``: per-frame ids.

    Raises:
        BagError: one line naming the path, topic or argument at fault.
    """

    def __init__(
        self,
        source: str | Path,
        destination: str | Path,
        image_topic: str,
        *,
        overlay: bool = False,
        overlay_alpha: float = 0.5,
        start_s: float = 0.0,
        duration_s: float | None = None,
        overwrite: bool = False,
        tracking: TrackingSettings | None = DEFAULT_TRACKING,
    ) -> None:
        self.source, self.destination = Path(source), Path(destination)
        self.tracking = tracking if tracking is not None and tracking.enabled else None
        self.image_topic = image_topic
        self.overlay_alpha = overlay_alpha
        self.overwrite = overwrite
        self.input = InputBag(source)
        try:
            msgtype, self.connections = self.input.image_topic(image_topic)
            self.compressed = msgtype.endswith("/CompressedImage")
            self.message_class: type = CompressedImage if self.compressed else Image
            self.start, self.stop = time_range(self.input.start_time, start_s, duration_s)
            self.total = self.input.count(self.connections, self.start, self.stop)
            if self.total == 0:
                where = " in the selected --start/--duration range" if (self.start or self.stop) else ""
                raise BagError(f"{source}: topic {image_topic} holds no messages{where}")
            check_output_path(destination, overwrite, source)
        except BaseException:
            self.input.close()
            raise
        self.topics = output_topics(image_topic, self.compressed, overlay)
        self.label_info_topic = f"{topic_namespace(image_topic, self.compressed)}/{LABEL_INFO_TOPIC}"

    def close(self) -> None:
        self.input.close()

    # --- the pipeline -----------------------------------------------------------------------

    def run(
        self,
        predictor: Predictor,
        on_frame: Callable[[], None] | None = None,
        on_skip: Callable[[Skipped], None] | None = None,
        custom_data: dict[str, str] | None = None,
    ) -> BagReport:
        """Segment every frame into the output bag; returns when done or interrupted.

        Args:
            predictor: the model (any backend).
            on_frame: called (on the writer thread) after each frame's outputs are written.
            on_skip: called (on the writer thread, in bag-time order) for each skipped frame.
            custom_data: string pairs for the output's ``metadata.yaml`` (provenance).

        Ctrl-C (``KeyboardInterrupt`` on the main thread) stops the run: frames already
        segmented are written and the bag is closed; the report says ``interrupted``.

        Raises:
            BagError: the output cannot be created, or the input became unreadable part-way
                (the output is closed first and holds every frame before the failure).
            OSError: the output could not be written (disk full, ...).
        """
        report = BagReport(self.destination, dict(self.topics), self.total)
        provenance = {
            "rt_panoptic_ros.source_bag": str(self.source),
            "rt_panoptic_ros.image_topic": self.image_topic,
            "rt_panoptic_ros.tracking": (
                f"max_age={self.tracking.max_age} iou_threshold={self.tracking.iou_threshold}"
                if self.tracking is not None
                else "disabled"  # not "off": YAML 1.1 readers take that for false
            ),
            **(custom_data or {}),
        }
        tracker = self.tracking.tracker() if self.tracking is not None else None
        cfg = predictor.cfg
        label_info = label_info_msg(
            Header(), cfg.dataset.class_names, void_label(cfg.dataset.num_classes),
            cfg.decoder.instance_score_thresh,
        )  # fmt: skip
        writer = _BagWriter(
            self, report, tuple(cfg.dataset.class_names), label_info, provenance, on_frame, on_skip
        )
        frames: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        stop = writer.stop  # set by the writer when it fails, and by the main thread at the end
        reader = threading.Thread(target=self._read, args=(frames, stop), name="bag-reader", daemon=True)
        read_failure: _ReadFailure | None = None
        began = time.perf_counter()
        writer.start()
        try:
            writer.ready.wait()
            if writer.failure is None:  # else the output could not even be created
                reader.start()
            while not stop.is_set():
                try:
                    item = frames.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                if isinstance(item, _ReadFailure):
                    read_failure = item
                    break
                if isinstance(item, Frame):
                    item = self._segment(predictor, tracker, item)
                writer.results.put(item)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            # Finishing the bag must not be cut short by a second Ctrl-C: it is what makes
            # the output a valid bag.
            with deferred_interrupts():
                stop.set()
                writer.results.put(_END)
                writer.join()
                if reader.ident is not None:  # started
                    reader.join()
                report.seconds = time.perf_counter() - began
        if writer.failure is not None:
            failure = writer.failure
            if isinstance(failure, BagError) or not report.discarded:
                raise failure
            raise BagError(
                f"{self.destination}: cannot write the bag ({first_line(failure)}) after "
                f"{report.written} frame(s); no bag written (the unfinished one was removed)"
            ) from None
        if read_failure is not None:
            after = (
                f" after bag time {format_stamp(read_failure.timestamp, self.input.start_time)}"
                if read_failure.timestamp is not None
                else ""
            )
            raise BagError(
                f"{self.source}: reading stopped{after}: {first_line(read_failure.error)}; "
                f"{self.destination} holds the {report.written} frame(s) before it"
            )
        return report

    def _segment(
        self, predictor: Predictor, tracker: PanopticTracker | None, frame: Frame
    ) -> tuple[Frame, PanopticResult] | Skipped:
        """Main thread: the model on one frame (a frame it refuses is skipped, not fatal), then
        the tracker (frames come in bag-time order)."""
        try:
            result = predictor(frame.rgb)
        except RTPanopticError as error:
            return Skipped(frame.timestamp, f"segmentation failed: {error}")
        if tracker is not None:
            result = tracker.update(result, stamp_ns(frame.header))
        return frame, result

    def _read(self, frames: queue.Queue, stop: threading.Event) -> None:
        """Reader thread: bag -> rclpy message -> RGB, in bag-time order, then the end marker."""
        last = None
        try:
            for timestamp, raw in self.input.messages(self.connections, self.start, self.stop):
                last = timestamp
                if not _put(frames, self._decode(timestamp, raw), stop):
                    return
        except Exception as error:  # the storage failed (corrupt chunk, ...): report, stop
            _put(frames, _ReadFailure(error, last), stop)
            return
        _put(frames, _END, stop)

    def _decode(self, timestamp: int, raw: bytes) -> Frame | Skipped:
        """One message's CDR bytes -> a :class:`Frame`, or why it cannot be one."""
        try:
            message = deserialize_message(raw, self.message_class)
        except Exception as error:  # rclpy raises RMWError (and others) for bad CDR
            return Skipped(
                timestamp,
                f"not a valid {ros_type_name(self.message_class)} ({len(raw)} bytes): {first_line(error)}",
            )
        try:
            rgb = compressed_to_rgb(message) if self.compressed else image_to_rgb(message)
        except ImageError as error:
            return Skipped(timestamp, str(error))
        return Frame(timestamp, message.header, rgb)


class _BagWriter(threading.Thread):
    """Writer thread: owns the output bag from creation to close.

    One thread does all of it because a sqlite3 connection may only be used by the thread
    that opened it. Items arrive in bag-time order on :attr:`results`: ``(frame, result)``
    pairs, :class:`Skipped` frames, and the end marker, after which the bag is closed.
    """

    def __init__(
        self,
        job: BagJob,
        report: BagReport,
        class_names: tuple[str, ...],
        label_info: Any,
        custom_data: dict[str, str],
        on_frame: Callable[[], None] | None,
        on_skip: Callable[[Skipped], None] | None,
    ) -> None:
        super().__init__(name="bag-writer", daemon=True)
        self.job, self.report, self.class_names = job, report, class_names
        self.label_info = label_info  # written once, before the first frame's outputs
        self.custom_data, self.on_frame, self.on_skip = custom_data, on_frame, on_skip
        self.results: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.ready = threading.Event()  # the bag exists (or could not be created)
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        job = self.job
        try:
            output = OutputBag(
                job.destination, job.input.storage, source=job.source, overwrite=job.overwrite,
                custom_data=self.custom_data,
            )  # fmt: skip
            connections = {
                name: output.add_topic(topic, ros_type_name(OUTPUT_TOPICS[name][1]), output_qos(OUTPUT_DEPTH))
                for name, topic in job.topics.items()
            }
            self.label_connection = output.add_topic(
                job.label_info_topic, ros_type_name(type(self.label_info)), output_qos(1, latched=True)
            )
        except BaseException as error:
            self._fail(error)
            self.ready.set()
            while self.results.get() is not _END:  # let the main thread finish as usual
                pass
            return
        self.ready.set()
        try:
            while (item := self.results.get()) is not _END:
                if self.failure is None:  # after a failure: drain, so that the main thread never blocks
                    self._handle(item, output, connections)
        finally:
            self._finish(output)

    def _finish(self, output: OutputBag) -> None:
        """Complete the bag, or remove it when writing failed: a bag whose storage and
        metadata might disagree is never left behind."""
        report = self.report
        if self.failure is None:
            output.set_custom_data("rt_panoptic_ros.frames_written", str(report.written))
            output.set_custom_data("rt_panoptic_ros.frames_skipped", str(len(report.skipped)))
            output.set_custom_data("rt_panoptic_ros.interrupted", str(report.interrupted).lower())
            try:
                output.close()
                return
            except BaseException as error:  # the disk filled up while finishing
                self._fail(error)
        output.discard()
        report.discarded = True

    def _handle(
        self, item: tuple[Frame, PanopticResult] | Skipped, output: OutputBag, connections: dict
    ) -> None:
        """Write one frame's messages (or report a skipped one); a failure stops the run."""
        try:
            if isinstance(item, Skipped):
                self.report.skipped.append(item)
                if self.on_skip:
                    self.on_skip(item)
                return
            frame, result = item
            if self.label_info is not None:
                self.label_info.header = frame.header
                output.write(self.label_connection, frame.timestamp, serialize_message(self.label_info))
                self.label_info = None
            messages = output_messages(
                frame.header, frame.rgb, result, tuple(connections), self.class_names, self.job.overlay_alpha
            )
            for name, message in messages.items():
                output.write(connections[name], frame.timestamp, serialize_message(message))
            self.report.written += 1
            if self.on_frame:
                self.on_frame()
        except BaseException as error:  # disk full, ...: stop the run, report it
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
        self.stop.set()


def _put(target: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; False when it was not put."""
    while not stop.is_set():
        try:
            target.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False

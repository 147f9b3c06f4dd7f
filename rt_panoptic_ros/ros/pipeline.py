"""The node's frame pipeline, ROS-free: keep-latest slots and overlapping stages on threads.

On a GPU (three threads):

    subscriptions -> [slots] -> prepare -> [handoff] -> infer -> [handoff] -> publish
                     keep latest  convert,            network,             track, overlay,
                     per camera   upload (one batch)  decode, download     messages, publish

While frame n is inferred, frame n-1's overlay and messages are built and published and frame
n+1 is converted and uploaded: the node's rate is its slowest stage's (the network), not the
sum of all. Between the stages a handoff holds one job and blocks its producer until the next
stage takes it, so nothing queues up: a frame that waits in the slot is replaced by a newer one
(counted as dropped), and a frame's latency stays bounded by about two network calls plus
publishing.

On a CPU (two threads): the infer thread takes the newest frames from the slots itself and
converts, uploads, infers, decodes and tracks them; the publish thread builds and publishes.

    subscriptions -> [slots] -> infer ----------------------------------> [handoff] -> publish
                                convert, upload, network, decode, track               overlay, ...

**One torch thread on a CPU.** Each thread that runs a parallel torch op keeps an OpenMP team of
its own alive, and once a process's OpenMP threads outnumber its cores, libgomp lets idle
workers sleep after a few spins instead of waiting for the next parallel region: every region
then pays to wake them. So on a CPU every torch op of the pipeline runs on the infer thread and
the publish thread runs numpy, OpenCV and rclpy only. Measured here (2 cores, bundled model,
1024x2048, frames one at a time): with upload on a prepare thread the network took 35 ms and
the decoder 47, against 24 and 40 for the Predictor alone in the same process. A prepare
thread would then only convert (a view for rgb8) while holding a frame back from the slot: a
frame taken by the infer thread when it is free is the newest one, a network call fresher. On a
GPU the infer thread's ops run on the device, and upload (a host-to-device copy) overlaps the
network on the prepare thread.

Several cameras share one network: each camera has its own keep-latest slot
(:class:`~rt_panoptic_ros.ros.frame_slot.MultiSlot`), and the prepare stage takes the newest
frame of every camera that has one and uploads them as one batch (images of different sizes are
padded into it by the Predictor), so the network and decoder run once for all of them. With
``batch_wait_s`` > 0 a frame waits at most that long for the other cameras' frames; a camera
that sends nothing never holds the others up longer. Counters per camera are in
:attr:`FramePipeline.cameras`.

Tracking (:mod:`rt_panoptic_ros.tracking`) runs after decoding (on the infer thread on a CPU,
the publish thread on a GPU), each taking the frames of each camera in the order they were
received: one tracker per camera, so ids of different cameras never interact. A camera whose
stamps go back in time (a bag replayed again) starts its tracks afresh.

Nothing here imports ROS: the node hands in ``convert`` (message -> RGB), ``wanted`` (which
outputs of a camera anyone listens to), ``publish`` (job -> messages on the wire) and
``stamp_of`` (message -> its time, for tracking).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.panoptic import PanopticResult
from rt_panoptic_ros.ros.frame_slot import Handoff, MultiSlot
from rt_panoptic_ros.ros.stats import LatencyWindow, RateWindow
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.tracking import PanopticTracker, TrackingSettings

#: Stages timed per frame, in order (ms each, in /diagnostics as ``<stage>_p50_ms``).
STAGES = ("convert", "upload", "infer", "decode", "track", "overlay", "publish")


@dataclass
class Job:
    """One frame on its way through the stages.

    Attributes:
        message: the input message as received.
        camera: the camera it came from (``""``: the node's single input).
        received: when it arrived (``time.monotonic()``).
        wanted: the outputs to build (names of ``ros.outputs.OUTPUT_TOPICS``).
        cfg: the decoder config this frame is decoded with.
        rgb: ``[H, W, 3]`` uint8, after ``convert``.
        result: the frame's maps on the CPU, after ``decode`` (with track ids after ``track``).
        device_maps: in the three-thread (GPU) layout, the decoder's ``semantic`` and frame-local
            ``instance`` maps still on the device, so that the overlay is drawn there (one
            image up, one down) and not from the host maps; ``None`` otherwise.
        times: ms per stage.
    """

    message: Any
    received: float
    wanted: frozenset[str] = frozenset()
    cfg: Config | None = None
    rgb: np.ndarray | None = None
    result: PanopticResult | None = None
    device_maps: tuple[Any, Any] | None = None
    times: dict[str, float] = field(default_factory=dict)
    camera: str = ""


@dataclass
class BatchJob:
    """The frames of one network call (one per camera at most), in camera order.

    Attributes:
        jobs: the frames; each gets its own ``result``.
        cfg: the decoder config they are decoded with.
        batch: the Predictor's prepared batch (on its device), after ``upload``.
        times: ms of the shared stages (upload, infer, decode), copied into each job's.
    """

    jobs: list[Job]
    cfg: Config
    batch: Any = None
    times: dict[str, float] = field(default_factory=dict)


@dataclass
class CameraCounters:
    """One camera's share of the pipeline's work (for its diagnostics)."""

    frames_out: int = 0
    rejected: int = 0  # frames that failed in some stage (not counted while stopping)
    skipped: int = 0  # frames nobody listened to
    latency: LatencyWindow = field(default_factory=LatencyWindow)  # receipt -> published (ms)
    output_rate: RateWindow = field(default_factory=RateWindow)


class FramePipeline:
    """Frames in (:meth:`put`, never blocks), published outputs out, on three threads.

    Args:
        predictor: runs upload / network / decode / download.
        cfg: the decoder config to start with.
        convert: message -> ``[H, W, 3]`` uint8 RGB (raises an ``RTPanopticError`` for bad input).
        wanted: ``camera`` -> the output names someone listens to now; empty: that camera's
            frame is not processed.
        publish: builds and sends a finished job's messages (may add ``times`` entries).
        on_error: ``(stage, error)`` for a frame that failed; the pipeline keeps running.
        stopping: ``True`` while the host is shutting down: failures then are not errors.
        infer_in_caller: no infer thread: the thread that calls :meth:`run_inference` (the
            process's main thread) runs that stage. As fast as a thread of its own, so long as
            no other live thread has run torch ops (the model loaded and warmed up on the
            caller or on a thread that ended): measured here, 24 / 38 ms network / decoder on
            a pipeline thread, as alone, and 34 / 45 ms while the thread that loaded the model
            was still alive (one torch thread, above).
        cameras: the cameras' names (``("",)``: one unnamed input).
        batch_wait_s: once a frame waits, how long at most to wait for the other cameras'
            frames before inferring without them (0: take what is there, never wait).
        tracking: track instances (one tracker per camera); ``None``: off.
        stamp_of: a message's time as an integer (e.g. ns), for the trackers' restart rule.
        one_torch_thread: the two-thread layout, every torch op on the infer thread (see
            above); default: on a CPU device.
    """

    def __init__(
        self,
        predictor: Predictor,
        cfg: Config,
        convert: Callable[[Any], np.ndarray],
        wanted: Callable[[str], Collection[str]],
        publish: Callable[[Job], None],
        on_error: Callable[[str, BaseException], None],
        stopping: Callable[[], bool] = lambda: False,
        infer_in_caller: bool = False,
        cameras: Sequence[str] = ("",),
        batch_wait_s: float = 0.0,
        tracking: TrackingSettings | None = None,
        stamp_of: Callable[[Any], int] | None = None,
        one_torch_thread: bool | None = None,
    ) -> None:
        self.predictor = predictor
        if one_torch_thread is None:
            one_torch_thread = predictor.device.type == "cpu"
        self.one_torch_thread = one_torch_thread
        self._cfg = cfg
        self._convert, self._wanted, self._publish = convert, wanted, publish
        self._on_error, self._stopping = on_error, stopping
        self.slot = MultiSlot(tuple(cameras))
        self.batch_wait_s = batch_wait_s
        self.cameras = {name: CameraCounters() for name in self.slot.cameras}
        self._to_infer, self._to_publish = Handoff(), Handoff()
        self.stage_times = {name: LatencyWindow() for name in STAGES}
        self.latency = LatencyWindow()  # receipt -> all outputs published (ms), all cameras
        self.output_rate = RateWindow()
        self.batches = 0  # network calls
        self.batch_sizes = LatencyWindow()  # frames per network call
        self._stamp_of = stamp_of
        self.trackers: dict[str, PanopticTracker] = {}  # per camera; empty: tracking is off
        self.set_tracking(tracking)
        stages = [("prepare", self._prepare), ("infer", self._infer), ("publish", self._deliver)]
        self._threads = [
            threading.Thread(target=self._loop, args=(step,), name=f"panoptic-{name}", daemon=True)
            for name, step in stages
            if not (infer_in_caller and name == "infer") and not (one_torch_thread and name == "prepare")
        ]
        for thread in self._threads:
            thread.start()

    @property
    def cfg(self) -> Config:
        return self._cfg

    def set_config(self, cfg: Config) -> None:
        """Swap the decoder config (whole; frames already decoding keep theirs)."""
        self._cfg = cfg

    def set_tracking(self, settings: TrackingSettings | None) -> None:
        """Turn tracking on (fresh tracks), retune it (tracks kept) or off (``None`` or not
        ``enabled``); the settings' values were checked when they were built."""
        if settings is None or not settings.enabled:
            self.trackers = {}
        elif not self.trackers:
            self.trackers = {camera: settings.tracker() for camera in self.slot.cameras}
        else:
            for tracker in self.trackers.values():
                tracker.retune(settings.max_age, settings.iou_threshold)

    def reset_tracks(self) -> None:
        """Forget every camera's tracks (taking frames again after a pause)."""
        for tracker in self.trackers.values():
            tracker.reset()

    @property
    def dropped(self) -> int:
        """Frames replaced in their slot by a newer one before they were taken (all cameras)."""
        return sum(self.slot.dropped.values())

    @property
    def frames_out(self) -> int:
        return sum(c.frames_out for c in self.cameras.values())

    @property
    def skipped(self) -> int:
        """Frames nobody listened to (all cameras)."""
        return sum(c.skipped for c in self.cameras.values())

    def put(self, message: Any, camera: str = "") -> None:
        """A new frame of ``camera`` (never blocks; its frame still waiting is replaced, counted)."""
        self.slot.put(camera, message)

    def run_inference(self) -> None:
        """Run the infer stage in the calling thread until :meth:`close` (``infer_in_caller``)."""
        self._loop(self._infer)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking frames; the threads finish their current step and exit."""
        self.slot.close()
        self._to_infer.close()
        self._to_publish.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # --- the stages ---------------------------------------------------------------------------

    def _loop(self, step: Callable[[], bool]) -> None:
        while step():
            pass

    def _prepare(self) -> bool:
        work = self._take_frames()
        if work is None:
            return False
        return work is _NOTHING or self._to_infer.put(work)

    def _take_frames(self) -> BatchJob | Any | None:
        """The newest frame of every camera that has one, converted and uploaded as one batch;
        :data:`_NOTHING` when none is left to infer; ``None`` once closed."""
        frames = self.slot.take(self.batch_wait_s)
        if frames is None:
            return None
        cfg, jobs = self._cfg, []
        for camera, frame in frames.items():
            wanted = frozenset(self._wanted(camera))
            if not wanted:
                self.cameras[camera].skipped += 1  # nobody listens: no inference at all
                continue
            job = Job(frame.message, frame.received, wanted, cfg, camera=camera)
            job.rgb = self._timed(job.times, [job], "convert", self._convert, job.message)
            if job.rgb is not _FAILED:
                jobs.append(job)
        if not jobs:
            return _NOTHING
        work = BatchJob(jobs, cfg)
        work.batch = self._timed(work.times, jobs, "upload", self.predictor.upload, [j.rgb for j in jobs])
        return _NOTHING if work.batch is _FAILED else work

    def _infer(self) -> bool:
        # On a CPU this thread takes the frames itself; on a GPU the prepare thread hands them.
        work = self._take_frames() if self.one_torch_thread else self._to_infer.take()
        if work is None:
            return False
        if work is _NOTHING:
            return True
        heads = self._timed(work.times, work.jobs, "infer", self.predictor.infer, work.batch.images)
        if heads is not _FAILED:
            results = self._timed(work.times, work.jobs, "decode", self._decode, heads, work)
            work.batch = None  # the device batch is not needed any more: free it now
            if results is not _FAILED:
                self.batches += 1
                self.batch_sizes.add(len(work.jobs))
                for job, result in zip(work.jobs, results, strict=True):
                    job.result = result
                    job.times.update(work.times)
                if self.one_torch_thread:
                    work.jobs = [job for job in work.jobs if self._track_one(job)]
                return self._to_publish.put(work)
        return True

    def _decode(self, heads: Any, work: BatchJob) -> list[PanopticResult]:
        """One result per frame, in the batch's order, on the CPU (and each job's
        ``device_maps`` in the three-thread layout)."""
        results = self.predictor.decode(heads, work.batch, work.cfg)
        if not self.one_torch_thread:
            for job, result in zip(work.jobs, results, strict=True):
                job.device_maps = (result.semantic, result.instance)
        return self.predictor.download(results)

    def _deliver(self) -> bool:
        work = self._to_publish.take()
        if work is None:
            return False
        for job in work.jobs:  # one camera's failure does not keep the others' outputs back
            self._deliver_one(job)
        return True

    def _deliver_one(self, job: Job) -> None:
        if not self.one_torch_thread and not self._track_one(job):
            return
        started = time.perf_counter()
        if self._timed(job.times, [job], "deliver", self._publish, job) is _FAILED:
            return
        # ``publish`` may time its overlay itself; the rest of its time is publishing.
        total = (time.perf_counter() - started) * 1000
        job.times.setdefault("publish", total - job.times.get("overlay", 0.0))
        for stage, ms in job.times.items():
            if stage in self.stage_times:
                self.stage_times[stage].add(ms)
        latency = (time.monotonic() - job.received) * 1000
        counters = self.cameras[job.camera]
        counters.frames_out += 1
        counters.output_rate.tick()
        counters.latency.add(latency)
        self.output_rate.tick()
        self.latency.add(latency)

    def _track_one(self, job: Job) -> bool:
        """Give ``job``'s result its camera's track ids (if tracking is on); ``False``: it failed."""
        tracker = self.trackers.get(job.camera)  # one read: the dict may be swapped meanwhile
        if tracker is None:
            return True
        tracked = self._timed(job.times, [job], "track", self._track, tracker, job)
        if tracked is _FAILED:
            return False
        job.result = tracked
        return True

    def _track(self, tracker: PanopticTracker, job: Job) -> PanopticResult:
        stamp = self._stamp_of(job.message) if self._stamp_of is not None else None
        return tracker.update(job.result, stamp)

    def _timed(
        self, times: dict[str, float], jobs: list[Job], stage: str, step: Callable[..., Any], *args: Any
    ) -> Any:
        """``step(*args)``, its time in ``times[stage]``; on failure :data:`_FAILED`, reported
        (once) and counted as rejected for every camera in ``jobs``."""
        started = time.perf_counter()
        try:
            value = step(*args)
        except Exception as error:  # bad input or a backend failure: report it, keep serving
            if not self._stopping():
                for job in jobs:
                    self.cameras[job.camera].rejected += 1
                self._on_error(stage, error)
            return _FAILED
        times[stage] = (time.perf_counter() - started) * 1000
        return value


#: What :meth:`FramePipeline._timed` returns for a failed step (``None`` is a valid value).
_FAILED: Any = object()
#: What :meth:`FramePipeline._take_frames` returns when no frame it took is to be inferred
#: (nobody listens, or each failed to convert or upload: reported and counted already).
_NOTHING: Any = object()

"""The node's frame pipeline, ROS-free: a keep-latest slot and three overlapping stages.

    subscription -> [slot] -> prepare -> [handoff] -> infer -> [handoff] -> publish
                    keep latest   convert,            network,             overlay, messages,
                    (drops)       upload              decode, download     publish (the node's)

Each stage runs on its own thread, so while frame n is inferred, frame n-1's overlay and
messages are built and published and frame n+1 is converted and uploaded: the node's rate is
its slowest stage's (the network), not the sum of all. Between the stages a handoff holds one
job and blocks its producer until the next stage takes it, so nothing queues up: a frame
that waits in the slot is replaced by a newer one (counted as dropped), and a frame's latency
stays bounded by about two network calls plus publishing.

The decoder's config is swapped whole (:meth:`FramePipeline.set_config`); each frame reads it
once, so a frame never sees half of a change. Per-stage times (ms) go to
:attr:`FramePipeline.stage_times` for the diagnostics; the node's ``publish`` callback adds
its own (``overlay``, ``publish``) to ``job.times``.

Nothing here imports ROS: the node hands in ``convert`` (message -> RGB), ``wanted`` (which
outputs anyone listens to) and ``publish`` (job -> messages on the wire).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.panoptic import PanopticResult
from rt_panoptic_ros.ros.frame_slot import FrameSlot
from rt_panoptic_ros.ros.stats import LatencyWindow, RateWindow
from rt_panoptic_ros.runtime import Predictor

#: Stages timed per frame, in order (ms each, in /diagnostics as ``<stage>_p50_ms``).
STAGES = ("convert", "upload", "infer", "decode", "overlay", "publish")


@dataclass
class Job:
    """One frame on its way through the stages.

    Attributes:
        message: the input message as received.
        received: when it arrived (``time.monotonic()``).
        wanted: the outputs to build (names of ``ros.outputs.OUTPUT_TOPICS``).
        cfg: the decoder config this frame is decoded with.
        rgb: ``[H, W, 3]`` uint8, after ``convert``.
        batch: the Predictor's prepared batch (on its device), after ``upload``.
        result: the frame's maps on the CPU, after ``decode``.
        times: ms per stage.
    """

    message: Any
    received: float
    wanted: frozenset[str] = frozenset()
    cfg: Config | None = None
    rgb: np.ndarray | None = None
    batch: Any = None
    result: PanopticResult | None = None
    times: dict[str, float] = field(default_factory=dict)


class Handoff:
    """One job between two stage threads: ``put`` waits until the last one was taken."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._job: Job | None = None
        self._closed = False

    def put(self, job: Job) -> bool:
        """Hand ``job`` on (blocks while the previous one waits); ``False`` once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._job is None or self._closed)
            if self._closed:
                return False
            self._job = job
            self._condition.notify_all()
            return True

    def take(self) -> Job | None:
        """The next job (blocks); ``None`` once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._job is not None or self._closed)
            if self._closed:
                return None
            job, self._job = self._job, None
            self._condition.notify_all()
            return job

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class FramePipeline:
    """Frames in (:meth:`put`, never blocks), published outputs out, on three threads.

    Args:
        predictor: runs upload / network / decode / download.
        cfg: the decoder config to start with.
        convert: message -> ``[H, W, 3]`` uint8 RGB (raises an ``RTPanopticError`` for bad input).
        wanted: the output names someone listens to now; empty: the frame is not processed.
        publish: builds and sends a finished job's messages (may add ``times`` entries).
        on_error: ``(stage, error)`` for a frame that failed; the pipeline keeps running.
        stopping: ``True`` while the host is shutting down: failures then are not errors.
        infer_in_caller: no infer thread: the thread that calls :meth:`run_inference` (the
            process's main thread) runs that stage. Measured here (2 cores, 1024x2048, bundled
            model, rclpy spinning meanwhile): network and decoder took 34 and 71 ms in the main
            thread, 47 and 100 ms in another one (torch's OpenMP team serves the thread that
            created it best), so the node's ``main`` gives its main thread to inference.
    """

    def __init__(
        self,
        predictor: Predictor,
        cfg: Config,
        convert: Callable[[Any], np.ndarray],
        wanted: Callable[[], Collection[str]],
        publish: Callable[[Job], None],
        on_error: Callable[[str, BaseException], None],
        stopping: Callable[[], bool] = lambda: False,
        infer_in_caller: bool = False,
    ) -> None:
        self.predictor = predictor
        self._cfg = cfg
        self._convert, self._wanted, self._publish = convert, wanted, publish
        self._on_error, self._stopping = on_error, stopping
        self.slot = FrameSlot()
        self._to_infer, self._to_publish = Handoff(), Handoff()
        self.stage_times = {name: LatencyWindow() for name in STAGES}
        self.latency = LatencyWindow()  # receipt -> all outputs published (ms)
        self.output_rate = RateWindow()
        self.frames_out = 0
        self.skipped = 0  # frames nobody listened to
        stages = [("prepare", self._prepare), ("infer", self._infer), ("publish", self._deliver)]
        self._threads = [
            threading.Thread(target=self._loop, args=(step,), name=f"panoptic-{name}", daemon=True)
            for name, step in stages
            if not (infer_in_caller and name == "infer")
        ]
        for thread in self._threads:
            thread.start()

    @property
    def cfg(self) -> Config:
        return self._cfg

    def set_config(self, cfg: Config) -> None:
        """Swap the decoder config (whole; frames already decoding keep theirs)."""
        self._cfg = cfg

    @property
    def dropped(self) -> int:
        """Frames replaced in the slot by a newer one before they were taken."""
        return self.slot.dropped

    def put(self, message: Any) -> None:
        """A new frame (never blocks; a frame still waiting is replaced and counted)."""
        self.slot.put(message)

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
        frame = self.slot.take()
        if frame is None:
            return False
        wanted = frozenset(self._wanted())
        if not wanted:
            self.skipped += 1  # nobody listens: no inference at all
            return True
        job = Job(frame.message, frame.received, wanted, self._cfg)
        job.rgb = self._timed(job, "convert", self._convert, job.message)
        if job.rgb is not _FAILED:
            job.batch = self._timed(job, "upload", self.predictor.upload, [job.rgb])
            if job.batch is not _FAILED:
                return self._to_infer.put(job)
        return True

    def _infer(self) -> bool:
        job = self._to_infer.take()
        if job is None:
            return False
        heads = self._timed(job, "infer", self.predictor.infer, job.batch.images)
        if heads is not _FAILED:
            job.result = self._timed(job, "decode", self._decode, heads, job)
            job.batch = None  # the device batch is not needed any more: free it now
            if job.result is not _FAILED:
                return self._to_publish.put(job)
        return True

    def _decode(self, heads: Any, job: Job) -> PanopticResult:
        return self.predictor.download(self.predictor.decode(heads, job.batch, job.cfg))[0]

    def _deliver(self) -> bool:
        job = self._to_publish.take()
        if job is None:
            return False
        started = time.perf_counter()
        if self._timed(job, "deliver", self._publish, job) is _FAILED:
            return True
        # ``publish`` may time its overlay itself; the rest of its time is publishing.
        total = (time.perf_counter() - started) * 1000
        job.times.setdefault("publish", total - job.times.get("overlay", 0.0))
        for stage, ms in job.times.items():
            if stage in self.stage_times:
                self.stage_times[stage].add(ms)
        self.frames_out += 1
        self.output_rate.tick()
        self.latency.add((time.monotonic() - job.received) * 1000)
        return True

    def _timed(self, job: Job, stage: str, step: Callable[..., Any], *args: Any) -> Any:
        """``step(*args)``, its time in ``job.times[stage]``; on failure :data:`_FAILED`, reported."""
        started = time.perf_counter()
        try:
            value = step(*args)
        except Exception as error:  # bad input or a backend failure: report it, keep serving
            if not self._stopping():
                self._on_error(stage, error)
            return _FAILED
        job.times[stage] = (time.perf_counter() - started) * 1000
        return value


#: What :meth:`FramePipeline._timed` returns for a failed step (``None`` is a valid value).
_FAILED: Any = object()

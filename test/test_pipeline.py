"""The node's frame pipeline without ROS: stages overlap, keep-latest, config swap, errors, stop,
several cameras through one network call.

A real Predictor on the rigged network (it sees instances everywhere); the pipeline's
callbacks stand for the node's ROS side and record what they are given. Events order the
threads, so nothing here depends on how fast this machine is.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
from conftest import rigged_model, wait_for

from rt_panoptic_ros.errors import ImageError
from rt_panoptic_ros.ros.frame_slot import MultiSlot
from rt_panoptic_ros.ros.pipeline import STAGES, FramePipeline, Job
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.tracking import DEFAULT_TRACKING, TrackingSettings
from rt_panoptic_ros.visualization import draw_overlay


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(rigged_model())


class Host:
    """The node's side: messages are ``(name, rgb)`` or ``(name, rgb, stamp)``; ``publish`` can
    be held at a gate."""

    def __init__(
        self,
        predictor: Predictor,
        wanted=("semantic", "instance", "detections", "overlay"),
        cameras=("",),
        batch_wait_s: float = 0.0,
        tracking: TrackingSettings | None = DEFAULT_TRACKING,
        one_torch_thread: bool | None = None,
    ):
        self.converted: list[str] = []
        self.published: list[Job] = []
        self.errors: list[tuple[str, BaseException]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.in_publish = threading.Event()
        self.stopping = False
        self.wanted = wanted
        self.pipeline = FramePipeline(
            predictor, predictor.cfg, self.convert, lambda camera: self.wanted, self.publish,
            lambda stage, error: self.errors.append((stage, error)), stopping=lambda: self.stopping,
            cameras=cameras, batch_wait_s=batch_wait_s, tracking=tracking,
            stamp_of=lambda message: message[2] if len(message) > 2 else None,
            one_torch_thread=one_torch_thread,
        )  # fmt: skip

    def convert(self, message):
        name, rgb = message[:2]
        if rgb is None:
            raise ImageError(f"{name}: not an image")
        self.converted.append(name)
        return rgb

    def publish(self, job: Job) -> None:
        self.in_publish.set()
        self.gate.wait(20)
        time.sleep(0.002)  # stands for the overlay: 1 of these 2 ms, the rest is "publish"
        job.times["overlay"] = 1.0
        self.published.append(job)


def frame(seed: int, h: int = 96, w: int = 160) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_frames_come_out_in_order_with_results_and_stage_times(predictor):
    host = Host(predictor)
    try:
        for k in range(3):
            host.pipeline.put((f"f{k}", frame(k)))
            assert wait_for(lambda k=k: host.pipeline.frames_out == k + 1)
        job = host.published[-1]
        assert job.message[0] == "f2" and job.result.semantic.shape == (96, 160)
        assert job.result.segments, "the rigged network sees instances"
        assert set(STAGES) <= set(job.times) and host.pipeline.frames_out == 3
        assert all(host.pipeline.stage_times[s].percentile(50) > 0 for s in STAGES)
        assert host.pipeline.latency.percentile(50) > 0 and not host.errors
    finally:
        host.pipeline.close()


#: The two layouts (``pipeline.py``) and how many frames each holds while publishing is held:
#: one in publish, one in each handoff, one in each other stage's hands.
LAYOUTS = pytest.mark.parametrize(
    "one_torch_thread, held", [(True, 3), (False, 5)], ids=["cpu-two-threads", "gpu-three-threads"]
)


@LAYOUTS
def test_the_next_frame_is_inferred_while_one_is_published(predictor, one_torch_thread, held):
    """Publishing frame 0 is held; frame 1 still gets converted, inferred and decoded."""
    host = Host(predictor, one_torch_thread=one_torch_thread)
    host.gate.clear()
    try:
        assert len(host.pipeline._threads) == (2 if one_torch_thread else 3)
        host.pipeline.put(("f0", frame(0)))
        assert host.in_publish.wait(20)
        host.pipeline.put(("f1", frame(1)))
        # f1 reaches the publish handoff: converted, and its inference done, while f0 publishes
        assert wait_for(lambda: host.pipeline._to_publish._job is not None)
        assert host.converted == ["f0", "f1"] and host.published == []
        host.pipeline.put(("f2", frame(2)))  # and f2 is converted (and uploaded) meanwhile
        assert wait_for(lambda: "f2" in host.converted)
        host.gate.set()
        assert wait_for(lambda: [j.message[0] for j in host.published] == ["f0", "f1", "f2"])
    finally:
        host.gate.set()
        host.pipeline.close()


@LAYOUTS
def test_a_waiting_frame_is_replaced_never_queued(predictor, one_torch_thread, held):
    host = Host(predictor, one_torch_thread=one_torch_thread)
    host.gate.clear()
    try:
        # f0 held in publish; then frames fill the stages (at most one between two stages, one
        # in each stage's hands) until the thread that takes frames holds one it cannot hand on
        for k in range(held):
            host.pipeline.put((f"f{k}", frame(k)))
            assert wait_for(lambda k=k: f"f{k}" in host.converted, 10.0)
        for k in range(held, 10):  # these wait in the slot, each replacing the one before
            host.pipeline.put((f"f{k}", frame(k)))
        time.sleep(0.5)
        assert host.converted == [f"f{k}" for k in range(held)], "nothing more is taken"
        host.gate.set()
        assert wait_for(lambda: host.published and host.published[-1].message[0] == "f9")
        order = [j.message[0] for j in host.published]
        assert order == [*(f"f{k}" for k in range(held)), "f9"], order  # in order, never queued
        assert host.pipeline.dropped == 10 - held - 1
    finally:
        host.gate.set()
        host.pipeline.close()


@LAYOUTS
def test_the_three_thread_layout_keeps_the_decoders_maps_for_the_overlay(predictor, one_torch_thread, held):
    """On a GPU the overlay is drawn from the maps the decoder left on its device (here the
    CPU, in the GPU's layout): the untracked frame-local maps, beside the tracked result."""
    host = Host(predictor, one_torch_thread=one_torch_thread)
    try:
        for k in range(2):
            host.pipeline.put((f"f{k}", frame(k)))
            assert wait_for(lambda k=k: host.pipeline.frames_out == k + 1)
        job = host.published[-1]
        if one_torch_thread:
            assert job.device_maps is None
        else:
            semantic, instance = job.device_maps
            assert torch.equal(semantic, job.result.semantic)
            assert torch.equal(instance.long(), job.result.segment_index.long())
            assert job.result.frame_instance is not None, "tracked: instance holds track ids"
            names = [f"class{k}" for k in range(predictor.cfg.dataset.num_classes)]
            host_maps = (job.result.semantic.numpy(), job.result.segment_index.numpy())
            picture = draw_overlay(job.rgb, *job.device_maps, job.result.segments, names)
            assert np.array_equal(picture, draw_overlay(job.rgb, *host_maps, job.result.segments, names))
    finally:
        host.pipeline.close()


def test_the_decoder_config_is_swapped_whole(predictor):
    host = Host(predictor)
    try:
        host.pipeline.put(("before", frame(5)))
        assert wait_for(lambda: len(host.published) == 1)
        cfg = host.pipeline.cfg
        strict = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, max_detections=1))
        host.pipeline.set_config(strict)
        host.pipeline.put(("after", frame(5)))
        assert wait_for(lambda: len(host.published) == 2)
        before, after = host.published
        assert before.cfg is cfg and after.cfg is strict
        assert len(before.result.segments) > 1 and len(after.result.segments) <= 1
    finally:
        host.pipeline.close()


def test_a_bad_frame_is_reported_and_the_next_one_served(predictor):
    host = Host(predictor)
    try:
        host.pipeline.put(("broken", None))
        assert wait_for(lambda: host.errors)
        stage, error = host.errors[0]
        assert stage == "convert" and "broken: not an image" in str(error)
        host.pipeline.put(("good", frame(1)))
        assert wait_for(lambda: len(host.published) == 1)
    finally:
        host.pipeline.close()


def test_nothing_is_computed_when_nobody_listens(predictor):
    host = Host(predictor, wanted=())
    try:
        host.pipeline.put(("f0", frame(0)))
        assert wait_for(lambda: host.pipeline.skipped == 1)
        assert host.converted == [] and host.published == []
    finally:
        host.pipeline.close()


def test_failures_while_stopping_are_not_errors(predictor):
    host = Host(predictor)
    host.stopping = True
    try:
        host.pipeline.put(("broken", None))
        time.sleep(0.5)
        assert host.errors == []
    finally:
        host.pipeline.close()
    assert not any(t.is_alive() for t in host.pipeline._threads)


# --- several cameras, one network ------------------------------------------------------------


@LAYOUTS
def test_ready_frames_of_all_cameras_share_one_network_call(predictor, one_torch_thread, held):
    """While the stages are busy, each camera keeps its newest frame; then both go in one batch."""
    host = Host(predictor, cameras=("front", "rear"), one_torch_thread=one_torch_thread)
    host.gate.clear()
    try:
        # Fill the stages with front frames until the thread that takes frames holds one it
        # cannot hand on (f0 in publish, f1 waiting for it, f2 inferred, ...)
        for k in range(held):
            host.pipeline.put((f"f{k}", frame(k)), "front")
            assert wait_for(lambda k=k: f"f{k}" in host.converted, 10.0)
        host.pipeline.put(("f5", frame(5)), "front")
        host.pipeline.put(("r5", frame(15, 64, 200)), "rear")  # another size: padded into the batch
        host.pipeline.put(("f6", frame(6)), "front")  # replaces f5
        host.gate.set()
        assert wait_for(lambda: len(host.published) == held + 2)
        assert [(j.camera, j.message[0]) for j in host.published] == [
            *(("front", f"f{k}") for k in range(held)), ("front", "f6"), ("rear", "r5"),
        ]  # fmt: skip
        front, rear = host.published[-2:]
        assert front.result.semantic.shape == (96, 160) and rear.result.semantic.shape == (64, 200)
        assert front.times["infer"] == rear.times["infer"], "one network call for both"
        assert host.pipeline.batches == held + 1 and host.pipeline.batch_sizes.percentile(100) == 2
        counters = host.pipeline.cameras
        assert host.pipeline.slot.dropped == {"front": 1, "rear": 0} and host.pipeline.dropped == 1
        assert (counters["front"].frames_out, counters["rear"].frames_out) == (held + 1, 1)
        assert counters["rear"].latency.percentile(50) > 0 and not host.errors
    finally:
        host.gate.set()
        host.pipeline.close()


def test_a_camera_without_frames_does_not_hold_the_others(predictor):
    for wait in (0.0, 0.3):
        host = Host(predictor, cameras=("front", "rear"), batch_wait_s=wait)
        try:
            sent = time.monotonic()
            host.pipeline.put(("f0", frame(0)), "front")
            assert wait_for(lambda host=host: len(host.published) == 1, 10.0)
            waited = time.monotonic() - sent
            assert host.published[0].camera == "front" and host.pipeline.cameras["rear"].frames_out == 0
            assert waited >= wait, "batch_wait_s: it waited for the rear camera"
            assert waited < wait + 5.0
        finally:
            host.pipeline.close()


def test_batch_wait_collects_a_camera_that_is_a_little_late(predictor):
    host = Host(predictor, cameras=("front", "rear"), batch_wait_s=5.0)
    try:
        host.pipeline.put(("f0", frame(0)), "front")
        time.sleep(0.2)
        host.pipeline.put(("r0", frame(1)), "rear")
        assert wait_for(lambda: len(host.published) == 2, 4.0), "the rear frame ended the wait"
        assert host.pipeline.batches == 1
        assert {j.camera for j in host.published} == {"front", "rear"}
    finally:
        host.pipeline.close()


def test_a_camera_nobody_listens_to_is_skipped_alone(predictor):
    host = Host(predictor, cameras=("front", "rear"))
    host.wanted_by_camera = {"front": ("semantic",), "rear": ()}
    host.pipeline._wanted = lambda camera: host.wanted_by_camera[camera]
    try:
        host.pipeline.put(("f0", frame(0)), "front")
        host.pipeline.put(("r0", frame(1)), "rear")
        assert wait_for(lambda: len(host.published) == 1 and host.pipeline.skipped >= 1)
        assert host.published[0].camera == "front" and host.published[0].wanted == {"semantic"}
    finally:
        host.pipeline.close()


def test_each_camera_is_tracked_alone_and_restarts_when_its_stamps_go_back(predictor):
    host = Host(predictor, cameras=("front", "rear"))
    try:
        for k, (camera, stamp) in enumerate([("front", 10), ("front", 20), ("rear", 5), ("front", 30)]):
            host.pipeline.put((f"{camera}{stamp}", frame(0), stamp), camera)
            assert wait_for(lambda k=k: host.pipeline.frames_out == k + 1)
        trackers = host.pipeline.trackers
        assert trackers["front"].frame == 2 and trackers["rear"].frame == 0
        first, third = host.published[0].result, host.published[3].result
        # the same picture three times on one camera: the same objects keep their ids
        assert [s.id for s in first.segments] == [s.id for s in third.segments]
        assert first.frame_instance is not None and third.instance.dtype == torch.int16
        assert "track" in host.published[3].times

        host.pipeline.put(("front1", frame(0), 1), "front")  # older than 30: a new sequence
        assert wait_for(lambda: host.pipeline.frames_out == 5)
        assert trackers["front"].frame == 0 and min(trackers["front"].tracks) == 1
    finally:
        host.pipeline.close()


def test_tracking_is_switched_off_and_on_while_running(predictor):
    host = Host(predictor, tracking=None)
    try:
        host.pipeline.put(("f0", frame(0)))
        assert wait_for(lambda: host.pipeline.frames_out == 1)
        untracked = host.published[0].result
        assert untracked.frame_instance is None and not host.pipeline.trackers
        assert [s.id for s in untracked.segments] == list(range(1, len(untracked.segments) + 1))

        host.pipeline.set_tracking(TrackingSettings(max_age=3))
        host.pipeline.put(("f1", frame(0)))
        assert wait_for(lambda: host.pipeline.frames_out == 2)
        assert host.published[1].result.frame_instance is not None
        with pytest.raises(ValueError, match="iou_threshold"):
            host.pipeline.set_tracking(TrackingSettings(iou_threshold=0.0))
        assert host.pipeline.trackers[""].iou_threshold == 0.3  # a bad value changes nothing
        host.pipeline.set_tracking(TrackingSettings(max_age=7))
        assert host.pipeline.trackers[""].max_age == 7 and host.pipeline.trackers[""].frame == 0
    finally:
        host.pipeline.close()


def test_multi_slot_waits_at_most_batch_wait_from_the_first_frame():
    slot = MultiSlot(("a", "b", "c"))
    slot.put("a", "a0")
    time.sleep(0.1)  # already waited 0.1 of the 0.3 s
    started = time.monotonic()
    frames = slot.take(wait_s=0.3)
    assert list(frames) == ["a"] and 0.1 <= time.monotonic() - started < 0.3
    slot.put("b", "b0")
    slot.put("b", "b1")
    slot.put("c", "c0")
    frames = slot.take()  # nothing to wait for: what is there, in camera order
    assert {c: f.message for c, f in frames.items()} == {"b": "b1", "c": "c0"}
    assert slot.dropped == {"a": 0, "b": 1, "c": 0}
    assert slot.take(timeout=0.05) is None
    slot.close()
    assert slot.take() is None

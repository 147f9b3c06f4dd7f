"""The node's frame pipeline without ROS: stages overlap, keep-latest, config swap, errors, stop.

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
from conftest import rigged_model

from rt_panoptic_ros.errors import ImageError
from rt_panoptic_ros.ros.pipeline import STAGES, FramePipeline, Job
from rt_panoptic_ros.runtime import Predictor


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(rigged_model())


class Host:
    """The node's side: messages are ``(name, rgb)``; ``publish`` can be held at a gate."""

    def __init__(self, predictor: Predictor, wanted=("semantic", "instance", "detections", "overlay")):
        self.converted: list[str] = []
        self.published: list[Job] = []
        self.errors: list[tuple[str, BaseException]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.in_publish = threading.Event()
        self.stopping = False
        self.wanted = wanted
        self.pipeline = FramePipeline(
            predictor, predictor.cfg, self.convert, lambda: self.wanted, self.publish,
            lambda stage, error: self.errors.append((stage, error)), stopping=lambda: self.stopping,
        )  # fmt: skip

    def convert(self, message):
        name, rgb = message
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


def test_the_next_frame_is_inferred_while_one_is_published(predictor):
    """Publishing frame 0 is held; frame 1 still gets converted, inferred and decoded."""
    host = Host(predictor)
    host.gate.clear()
    try:
        host.pipeline.put(("f0", frame(0)))
        assert host.in_publish.wait(20)
        host.pipeline.put(("f1", frame(1)))
        # f1 reaches the publish handoff: converted, and its inference done, while f0 publishes
        assert wait_for(lambda: host.pipeline._to_publish._job is not None)
        assert host.converted == ["f0", "f1"] and host.published == []
        host.pipeline.put(("f2", frame(2)))  # and f2 is converted and uploaded meanwhile
        assert wait_for(lambda: host.pipeline._to_infer._job is not None or "f2" in host.converted)
        host.gate.set()
        assert wait_for(lambda: [j.message[0] for j in host.published] == ["f0", "f1", "f2"])
    finally:
        host.gate.set()
        host.pipeline.close()


def test_a_waiting_frame_is_replaced_never_queued(predictor):
    host = Host(predictor)
    host.gate.clear()
    try:
        for k in range(3):  # f0 in publish, f1 inferred and waiting, f2 prepared and waiting
            host.pipeline.put((f"f{k}", frame(k)))
            assert wait_for(lambda k=k: f"f{k}" in host.converted)
        for k in range(3, 8):  # these wait in the slot, each replacing the one before
            host.pipeline.put((f"f{k}", frame(k)))
        host.gate.set()
        assert wait_for(lambda: host.published and host.published[-1].message[0] == "f7")
        assert [j.message[0] for j in host.published] == ["f0", "f1", "f2", "f7"]
        assert host.pipeline.dropped == 4
    finally:
        host.gate.set()
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

"""One worker of a fleet run: a Predictor loaded once, then bag after bag with the one-bag pipeline.

The same class serves the sequential run (in the CLI's process) and each Ray actor
(:mod:`~rt_panoptic_ros.ros.bag.ray_runner`). A bag is processed by
:class:`~rt_panoptic_ros.ros.bag.processing.BagJob`, exactly as ``rt-panoptic-bag IN OUT``
processes it, into the attempt's staging folder, and moved to its output path only when
complete: an attempt that fails, is interrupted or is killed leaves nothing under that path.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rt_panoptic_ros.errors import first_line
from rt_panoptic_ros.ros.bag.fleet_manifest import (
    DONE,
    FAILED,
    INTERRUPTED,
    BagOptions,
    BagOutcome,
    BagTask,
    ModelOptions,
    worker_name,
)
from rt_panoptic_ros.ros.bag.processing import BagJob, Skipped, format_stamp
from rt_panoptic_ros.ros.bag.storage import check_output_path


def open_job(task: BagTask, options: BagOptions) -> BagJob:
    """The checked :class:`BagJob` of ``task`` (writing into its staging folder).

    Raises:
        BagError: the bag cannot be processed as asked (not a bag, no such topic, ...).
    """
    return BagJob(task.source, task.staged, options.image_topic, **options.job)


def probe(task: BagTask, options: BagOptions) -> int:
    """Every check that needs no model (as the one-bag tool does first); the frames to segment.

    Raises:
        BagError: one line, as the one-bag tool prints it; also when the output may not be
            replaced (a folder that is not a bag, the input or a folder around it).
    """
    check_output_path(task.output, True, task.source)
    job = open_job(task, options)
    job.close()
    return job.total


class BagWorker:
    """A Predictor, loaded once, that processes bags one at a time.

    Args:
        model: the model file, backend, device and torch threads.
        options: the per-bag settings of the run.
    """

    def __init__(self, model: ModelOptions, options: BagOptions) -> None:
        self.predictor = model.load()
        self.options = options
        self.name = worker_name()
        backend = self.predictor.backend
        where = f"{Path(model.model).name} on {backend.name}/{self.predictor.device}"
        # The one-bag tool's provenance, so that both write the same metadata.
        self.custom_data = {"rt_panoptic_ros.model": str(model.model), "rt_panoptic_ros.backend": where}
        import torch

        self.description = {"model": where, "torch_threads": torch.get_num_threads()}

    def process(self, task: BagTask, progress: Callable[[int], None] | None = None) -> BagOutcome:
        """One attempt at ``task``: the bag is at ``task.output`` when the outcome is ``done``.

        Never raises for a bad bag: a bag that cannot be read or written (or any error of the
        model on it) is a ``failed`` outcome with one line, so that the other bags go on.
        Ctrl-C inside the bag is an ``interrupted`` outcome (nothing written).

        Args:
            progress: called (on the bag's writer thread) with the frames processed so far.
        """
        began = time.perf_counter()
        outcome = BagOutcome(task.name, task.attempt, FAILED, self.name)
        shutil.rmtree(task.staging, ignore_errors=True)
        processed = 0

        def on_frame() -> None:
            nonlocal processed
            processed += 1
            if progress is not None:
                progress(processed)

        def on_skip(frame: Skipped) -> None:
            stamp = format_stamp(frame.timestamp, job.input.start_time)
            outcome.skipped.append(f"skipped the frame at bag time {stamp}: {frame.reason}")
            on_frame()

        try:
            job = open_job(task, self.options)
        except Exception as error:  # BagError, or any surprise: this bag fails, the run goes on
            outcome.error = first_line(error)
            return outcome
        try:
            report = job.run(self.predictor, on_frame, on_skip, self.custom_data, **self.options.run)
        except Exception as error:  # the input broke part-way, the disk filled up, the model failed
            outcome.error = first_line(error)
            shutil.rmtree(task.staging, ignore_errors=True)
            return outcome
        finally:
            job.close()
        outcome.frames = report.written
        outcome.seconds = time.perf_counter() - began
        if report.interrupted:
            outcome.state = INTERRUPTED
            shutil.rmtree(task.staging, ignore_errors=True)
            return outcome
        try:
            publish(task.staged, task.output)
        except OSError as error:
            outcome.error = f"{task.output}: cannot move the finished bag there ({error.strerror or error})"
            return outcome
        finally:
            shutil.rmtree(task.staging, ignore_errors=True)
        outcome.state = DONE
        return outcome


def publish(staged: Path, output: Path) -> None:
    """Move a finished bag to its output path, replacing the old output (a bag folder the plan
    checked and the manifest owns). Between the two steps neither exists, never half of one."""
    if output.exists() or output.is_symlink():
        if output.is_dir() and not output.is_symlink():
            shutil.rmtree(output)
        else:
            output.unlink()
    os.replace(staged, output)

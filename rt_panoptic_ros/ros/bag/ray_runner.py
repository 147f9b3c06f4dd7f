"""A fleet run on a Ray cluster (``rt-panoptic-bag BAG... --output-dir DIR --ray [ADDRESS]``).

Each worker is a Ray actor holding one :class:`~rt_panoptic_ros.ros.bag.worker.BagWorker`
(one Predictor, loaded once, reused for every bag it gets). The driver (the CLI's process)
keeps the manifest and the progress view; it hands one bag at a time to each idle worker,
so a fast worker simply takes more bags. Workers report frames to a small progress actor
twice a second, and their outcome when a bag ends.

A worker that dies mid-bag (killed, out of memory, its node lost) is restarted by Ray
(``max_restarts=-1``, loading its Predictor again) and its bag goes back to the queue, from
scratch, up to ``--max-attempts`` tries. Tasks are never retried by Ray itself
(``max_task_retries=0``), so every attempt is counted in the manifest.

Resources: a worker asks Ray for ``threads`` CPUs (its torch threads; the bag's reader and
writer threads come on top and are light) and, on a cluster with GPUs, ``1 / workers_per_gpu``
of a GPU. Ray sets ``CUDA_VISIBLE_DEVICES`` per worker, so the worker's device is ``cuda``.
Inputs and the output folder must lie on a file system that the driver and every node see at
the same path.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from rt_panoptic_ros.errors import first_line
from rt_panoptic_ros.ros.bag.fleet import FleetRun
from rt_panoptic_ros.ros.bag.fleet_manifest import FAILED, BagOptions, BagOutcome, FleetError, ModelOptions

#: How often workers report frames and the driver refreshes the progress view.
PROGRESS_PERIOD_S = 0.5
#: CPU threads per worker when none are given: a GPU worker's torch has little to do on the
#: CPU. A CPU worker gets a quarter of the CPUs, 1 to 4: a worker whose torch threads take all
#: of its cores fights the bag's own reader and writer threads and anything else running (on
#: this 2-core machine under other jobs' load, 2 threads were 2-5x slower than 1; quiet, 1.4x
#: faster: benchmarks/fleet.json, docs/bags.md); more workers of fewer threads degrade less
#: on a shared machine, and more than 4 threads gain little.
GPU_WORKER_THREADS = 2
MAX_CPU_WORKER_THREADS = 4
#: Wait before asking a restarting worker again whether it is back.
_RESTART_POLL_S = 0.5


class WorkerStartError(RuntimeError):
    """A worker's Predictor could not be loaded; the message is the error's line."""


@dataclass(frozen=True)
class WorkerPlan:
    """How many workers, and what each asks Ray for."""

    count: int
    threads: int
    gpus: float
    device: str

    def describe(self) -> dict[str, Any]:
        return {"workers": self.count, "threads_per_worker": self.threads, "gpus_per_worker": self.gpus,
                "device": self.device}  # fmt: skip


def plan_workers(
    resources: dict[str, float],
    device: str | None,
    workers: int | None,
    workers_per_gpu: int,
    threads: int | None,
    bags: int,
) -> WorkerPlan:
    """The workers for a cluster of ``resources`` (``ray.cluster_resources()``).

    GPUs are used when the cluster has them and ``device`` is not ``cpu``:
    ``GPUs x workers_per_gpu`` workers (or ``workers``), each with ``threads`` CPUs (default
    :data:`GPU_WORKER_THREADS`). Otherwise CPU workers: ``workers`` of ``CPUs / workers``
    threads each, or with neither given workers of ``CPUs / 4`` threads (1 to
    :data:`MAX_CPU_WORKER_THREADS`) filling the CPUs. Never more workers than ``bags``.

    Raises:
        FleetError: a CUDA device on a cluster without GPUs, or a value out of range.
    """
    if workers is not None and workers < 1:
        raise FleetError(f"--workers {workers}: must be >= 1")
    if workers_per_gpu < 1:
        raise FleetError(f"--workers-per-gpu {workers_per_gpu}: must be >= 1")
    if threads is not None and threads < 1:
        raise FleetError(f"--threads-per-worker {threads}: must be >= 1")
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    wants_cuda = device is not None and device.startswith("cuda")
    if wants_cuda and gpus == 0:
        raise FleetError(f"--device {device}: the Ray cluster has no GPU")
    if gpus and (device is None or wants_cuda):
        count = workers or gpus * workers_per_gpu
        plan = WorkerPlan(count, threads or GPU_WORKER_THREADS, 1.0 / workers_per_gpu, "cuda")
    else:
        threads = threads or max(1, cpus // workers if workers else min(MAX_CPU_WORKER_THREADS, cpus // 4))
        plan = WorkerPlan(workers or max(1, cpus // threads), threads, 0.0, device or "cpu")
    return dataclasses.replace(plan, count=max(1, min(plan.count, bags)))


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Frames processed per bag attempt, as the workers report them (the driver reads it)."""

    def __init__(self) -> None:
        self.frames: dict[str, tuple[int, int]] = {}

    def update(self, name: str, attempt: int, frames: int) -> None:
        self.frames[name] = (attempt, frames)

    def read(self) -> dict[str, tuple[int, int]]:
        return self.frames


@ray.remote
class BagWorkerActor:
    """A :class:`BagWorker` in its own process: the Predictor is loaded once, here."""

    def __init__(self, model: ModelOptions, options: BagOptions, board: str) -> None:
        from rt_panoptic_ros.ros.bag.worker import BagWorker

        self.error: str | None = None
        try:
            self.worker = BagWorker(model, options)
        except Exception as error:  # the model cannot load here (backend, device, file): say why
            self.error = _first_line(error)
        # By name, not by handle: a handle argument would keep the constructor's arguments in
        # the object store, which Ray warns may not survive until a restart.
        self.board = ray.get_actor(board)

    def name(self) -> str:
        """``host:pid``: where this worker runs (a new pid after a restart).

        Raises:
            WorkerStartError: its Predictor could not be loaded (one line).
        """
        if self.error is not None:
            raise WorkerStartError(self.error)
        return self.worker.name

    def process(self, task) -> BagOutcome:
        last = 0.0

        def progress(frames: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_PERIOD_S:
                last = now
                self.board.update.remote(task.name, task.attempt, frames)

        return self.worker.process(task, progress)


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``), or start a
    local one (``None`` or ``local``; ``RAY_ADDRESS`` is honoured as by ``ray.init``). Returns
    whether this process started Ray (and so shuts it down). An already initialised Ray (a
    program calling :func:`run_on_ray` itself) is used as it is."""
    if ray.is_initialized():
        return False
    ray.init(address=None if address in (None, "local") else address, logging_level=logging.WARNING)
    return True


def run_on_ray(
    run: FleetRun,
    model: ModelOptions,
    options: BagOptions,
    *,
    address: str | None = None,
    workers: int | None = None,
    workers_per_gpu: int = 1,
    threads: int | None = None,
) -> None:
    """Process ``run.tasks`` on Ray workers; returns when every bag is done or failed.

    Ctrl-C raises ``KeyboardInterrupt`` after the workers are stopped (their unfinished bags
    leave only staging folders).

    Raises:
        FleetError: no worker could be planned (see :func:`plan_workers`).
    """
    owns = connect(address)
    actors: list[Any] = []
    board = None
    try:
        plan = plan_workers(ray.cluster_resources(), model.device, workers, workers_per_gpu, threads,
                            len(run.tasks))  # fmt: skip
        actor_model = dataclasses.replace(model, device=plan.device, threads=plan.threads)
        cluster = {k: ray.cluster_resources().get(k, 0) for k in ("CPU", "GPU")}
        run.execution = {"mode": "ray", "address": address or "local", **plan.describe(), "cluster": cluster}
        run.say(f"starting {plan.count} Ray worker(s), {plan.threads} CPU thread(s)"
                f"{f' and {plan.gpus:g} GPU' if plan.gpus else ''} each")  # fmt: skip
        board_name = f"rt-panoptic-bag-progress-{uuid.uuid4().hex}"
        board = ProgressBoard.options(name=board_name).remote()
        worker = BagWorkerActor.options(
            num_cpus=plan.threads, num_gpus=plan.gpus, max_restarts=-1, max_task_retries=0
        )
        actors = [worker.remote(actor_model, options, board_name) for _ in range(plan.count)]
        _Scheduler(run, actors, board).loop()
    finally:
        for actor in [*actors, *([board] if board is not None else [])]:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
        if owns:
            ray.shutdown()


class _Scheduler:
    """The driver's loop: one bag per idle worker, outcomes in, lost bags back to the queue."""

    def __init__(self, run: FleetRun, actors: list[Any], board: Any) -> None:
        self.run, self.board = run, board
        self.queue = deque(run.tasks)
        self.starting: dict[Any, Any] = {}  # name() ref -> actor not (yet, or again) known alive
        self.names: dict[Any, str] = {}  # actor -> host:pid
        self.idle: list[Any] = []
        self.inflight: dict[Any, tuple[Any, Any]] = {}  # process() ref -> (actor, task)
        self.start_errors: list[str] = []
        self.next_poll = 0.0
        for actor in actors:
            self._ask_name(actor)

    def _ask_name(self, actor: Any) -> None:
        self.starting[actor.name.remote()] = actor

    def loop(self) -> None:
        while self.queue or self.inflight:
            while self.queue and self.idle:
                actor = self.idle.pop()
                task = self.run.begin(self.queue.popleft(), self.names[actor])
                self.inflight[actor.process.remote(task)] = (actor, task)
            if not self.inflight and not self.starting:  # every worker is gone for good
                why = self.start_errors[-1] if self.start_errors else "all died"
                reason = f"not run: no Ray worker left ({why})"
                while self.queue:
                    self.run.abandon(self.queue.popleft(), reason)
                return
            ready, _ = ray.wait([*self.inflight, *self.starting], num_returns=1, timeout=PROGRESS_PERIOD_S)
            for ref in ready:
                if ref in self.starting:
                    self._started(ref)
                else:
                    self._finished(ref)
            self._poll_progress()

    def _started(self, ref: Any) -> None:
        actor = self.starting.pop(ref)
        try:
            self.names[actor] = ray.get(ref)
        except ActorUnavailableError:  # restarting: ask again shortly
            time.sleep(_RESTART_POLL_S)
            self._ask_name(actor)
        except WorkerStartError as error:  # its Predictor cannot load: gone for good
            self._drop(actor, _first_line(error))
        except (ActorDiedError, RayActorError) as error:  # died while starting, for good
            self._drop(actor, _first_line(error))
        else:
            self.run.start_progress()  # from the first worker ready: the rate is the workers'
            self.idle.append(actor)

    def _drop(self, actor: Any, line: str) -> None:
        self.start_errors.append(line)
        self.run.say(f"a Ray worker could not start: {line}")
        ray.kill(actor)

    def _finished(self, ref: Any) -> None:
        actor, task = self.inflight.pop(ref)
        try:
            outcome = ray.get(ref)
        except RayActorError as error:  # the worker died mid-bag (or cannot be reached)
            if self.run.lost(task, _lost_reason(error)):
                self.queue.appendleft(task)
            self._ask_name(actor)  # back in service once Ray has restarted it
            return
        except Exception as error:  # an error the worker did not turn into an outcome
            outcome = BagOutcome(task.name, task.attempt, FAILED, self.names.get(actor, "?"),
                                 error=_first_line(error))  # fmt: skip
        self.run.finish_bag(outcome)
        self.idle.append(actor)

    def _poll_progress(self) -> None:
        now = time.monotonic()
        if now < self.next_poll or not self.inflight:
            return
        self.next_poll = now + PROGRESS_PERIOD_S
        try:
            frames = ray.get(self.board.read.remote(), timeout=10)
        except Exception:  # the view may lag; the run goes on
            return
        for name, (attempt, count) in frames.items():
            self.run.progress(name, count, attempt)


def _lost_reason(error: BaseException) -> str:
    if isinstance(error, ActorUnavailableError):
        return "the worker could not be reached"
    return "the worker process died (killed, out of memory, or its node lost)"


def _first_line(error: BaseException) -> str:
    """The error's first line; for an error raised in a worker, the original error's (Ray's
    wrapper adds the worker's traceback)."""
    return first_line(getattr(error, "cause", None) or error)

"""Many bags in one run (``rt-panoptic-bag BAG... --output-dir DIR``): plan, manifest, progress, summary.

A fleet's recordings are processed bag by bag into ``DIR/<input bag name>``, each output
exactly as the one-bag tool writes it. This module holds what makes such a run restartable
and observable, and nothing that needs ROS or Ray:

- :class:`FleetRun`: the run over one output folder. It takes the folder's lock (one run
  per folder), plans (which bags are done already, which must be redone from scratch),
  keeps ``DIR/manifest.json`` true at every step (written atomically: each bag's input,
  output, state ``pending``/``running``/``done``/``failed``, error line, frames, skipped
  frames, seconds, worker and attempts), shows one progress view over the whole run (bags
  done, frames, frames/s, time left) and writes ``DIR/summary.json`` at the end.
- Executors hand it bags and results: :func:`run_sequential` here (one process, one
  Predictor), :mod:`~rt_panoptic_ros.ros.bag.ray_runner` on a Ray cluster. Both process a
  bag with :class:`~rt_panoptic_ros.ros.bag.worker.BagWorker`.

What may be under ``DIR/<name>`` is only ever a whole bag of every frame: a bag is written in
``DIR/.incomplete/<name>.<attempt>/`` (where the bag writer stages it once more, so that even
that name only holds a closed bag) and moved to its name when complete. An interrupted,
failed or killed attempt leaves nothing but that staging folder, which the next run removes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from rt_panoptic_ros.atomic_files import atomic_write
from rt_panoptic_ros.cli_support import EXIT_ERROR as EXIT_FAILED
from rt_panoptic_ros.cli_support import EXIT_INTERRUPTED
from rt_panoptic_ros.errors import RTPanopticError, first_line
from rt_panoptic_ros.interrupts import deferred_interrupts, sigterm_as_interrupt
from rt_panoptic_ros.ros.bag.fleet_manifest import (
    DEFAULT_MAX_ATTEMPTS,
    DONE,
    FAILED,
    INTERRUPTED,
    LOCK,
    MANIFEST,
    PENDING,
    RESERVED,
    RUNNING,
    STAGING,
    SUMMARY,
    BagOutcome,
    BagRecord,
    BagTask,
    FleetError,
    Manifest,
    now,
    output_name,
    worker_name,
)
from rt_panoptic_ros.ros.bag.fleet_progress import FleetProgress

EXIT_OK = 0


class FleetRun:
    """One run of many bags into one output folder.

    Use it as a context manager (the folder's lock and the plan: :attr:`tasks` are the bags
    to process, in the order given), let an executor call :meth:`begin`, :meth:`progress`,
    :meth:`finish_bag` and :meth:`lost`, then :meth:`close` (summary, last line, exit status);
    :func:`run_fleet` does all of that.

    Args:
        sources: input bags; each is written to ``output_dir/<its name>`` (:func:`output_name`).
        settings: what decides the outputs (:meth:`BagOptions.settings` and the model's hash):
            a folder made with other settings is refused unless ``overwrite``.
        overwrite: redo every bag, replacing outputs (only ever bag folders), whatever the
            manifest says.
        max_attempts: tries of a bag whose worker dies before it is failed.
        stream: where lines and the progress view go (stderr).

    Raises:
        FleetError: see :meth:`__enter__`.
    """

    def __init__(
        self,
        sources: Sequence[str | Path],
        output_dir: str | Path,
        settings: dict[str, Any],
        *,
        overwrite: bool = False,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        prog: str = "rt-panoptic-bag",
        stream: IO[str] | None = None,
        command: str | None = None,
    ) -> None:
        if max_attempts < 1:
            raise FleetError(f"--max-attempts {max_attempts}: must be >= 1")
        self.sources = [Path(s) for s in sources]
        self.output_dir = Path(output_dir)
        self.settings, self.overwrite, self.max_attempts = settings, overwrite, max_attempts
        self.prog, self.stream = prog, stream if stream is not None else sys.stderr
        self.command = command or shlex.join(sys.argv)
        self.tasks: list[BagTask] = []
        self.names: list[str] = []  # this run's bags, in the order given
        self.done_before: set[str] = set()
        self.execution: dict[str, Any] = {}  # set by the executor: mode, workers, threads, ...
        self.interrupted = False
        self.manifest: Manifest | None = None
        self._attempt: dict[str, int] = {}  # each bag's current attempt (older ones' progress is stale)
        self._skipped_lines: dict[str, list[str]] = {}
        self._lock_file: IO[str] | None = None
        self.view = FleetProgress(prog, self.stream)
        self.started = now()
        self._began = time.perf_counter()
        self._first_bag: float | None = None  # when the first bag began (workers ready)

    # --- lock and plan ---------------------------------------------------------------------------

    def __enter__(self) -> FleetRun:
        """Take the output folder's lock and plan the run; the manifest is written at once.

        Raises:
            FleetError: the folder is a file or in use by another run; two inputs share a
                name (or a reserved one); the folder's manifest was made with other settings
                or names another input for an output; an output exists that the manifest does
                not record (these three: unless ``overwrite``). An output that is not a bag
                folder, or is an input, fails its bag in :meth:`check`, even with ``overwrite``.
        """
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise FleetError(f"{self.output_dir}: cannot create the folder ({error.strerror})") from None
        if not self.output_dir.is_dir():
            raise FleetError(f"{self.output_dir}: not a folder")
        self._lock()
        try:
            self._plan()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.view.close()
        self._unlock()

    def _lock(self) -> None:
        path = self.output_dir / LOCK
        handle = open(path, "a+")  # held for the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FleetError(f"{self.output_dir}: another run is writing into it ({holder})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{worker_name()} since {now()}\n")
        handle.flush()
        self._lock_file = handle

    def _unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock; the file stays (harmless, reused)
            self._lock_file = None

    def _plan(self) -> None:
        folder = self.output_dir
        sources: dict[Path, str] = {}
        for source in self.sources:
            if not source.exists():  # still planned: the probe reports it as this bag's failure
                sources.setdefault(source.absolute(), output_name(source))
            else:
                sources.setdefault(source.resolve(), output_name(source))
        by_name: dict[str, list[Path]] = {}
        for source, name in sources.items():
            by_name.setdefault(name, []).append(source)
        clashes = {n: s for n, s in by_name.items() if len(s) > 1}
        if clashes:
            name, paths = next(iter(clashes.items()))
            raise FleetError(
                f"{len(clashes)} output name(s) given by more than one input bag, e.g. {name}: "
                f"{', '.join(map(str, paths))} (outputs are named after the input bag folders)"
            )
        for name in by_name:
            if name in RESERVED or not name or name.startswith("."):
                raise FleetError(f"{by_name[name][0]}: a bag named {name!r} cannot be written into {folder}")
        manifest = Manifest.load(folder / MANIFEST)
        if manifest is not None and manifest.settings != self.settings and not self.overwrite:
            key = next(
                k for k in sorted({*manifest.settings, *self.settings})
                if manifest.settings.get(k) != self.settings.get(k)
            )  # fmt: skip
            raise FleetError(
                f"{manifest.path}: its bags were made with other settings ({key}: "
                f"{manifest.settings.get(key)!r}, now {self.settings.get(key)!r}); use another "
                f"--output-dir, or pass --overwrite to redo every bag"
            )
        if manifest is None:
            manifest = Manifest(folder / MANIFEST, self.settings)
        manifest.settings = self.settings
        for source, name in sources.items():
            output = folder / name
            record = manifest.bags.get(name)
            if record is not None and record.input != str(source) and not self.overwrite:
                raise FleetError(
                    f"{output}: {manifest.path} records it as the output of {record.input}, not of "
                    f"{source}; use another --output-dir, or pass --overwrite"
                )
            exists = output.exists() or output.is_symlink()
            if exists and record is None and not self.overwrite:
                raise FleetError(
                    f"{output} exists and {manifest.path} does not record it; pass --overwrite to replace it"
                )
            self.names.append(name)
            done = record is not None and record.state == DONE and (output / "metadata.yaml").is_file()
            if done and not self.overwrite:
                self.done_before.add(name)
                continue
            if record is None or self.overwrite:
                record = BagRecord(str(source), str(output), attempts=record.attempts if record else 0)
            record.state, record.error = PENDING, None
            manifest.bags[name] = record
            self.tasks.append(BagTask(name, source, output))
        # No run holds the folder but this one: every unfinished attempt's folder is stale.
        shutil.rmtree(folder / STAGING, ignore_errors=True)
        self.manifest = manifest
        manifest.save()

    # --- checks before the model ------------------------------------------------------------------

    def check(self, probe: Callable[[BagTask], int]) -> int:
        """Open each bag to process (``probe`` returns its frame count or raises); a bag that
        is not readable as asked, or whose output may not be replaced (not a bag folder, the
        input itself), is reported, failed and dropped, and the others go on. Returns how
        many failed."""
        kept = []
        for task in self.tasks:
            try:
                total = probe(task)
            except RTPanopticError as error:
                record = self._record(task.name)
                record.attempts += 1
                record.state, record.error = FAILED, first_line(error)
                self.say(f"failed {task.name}: {record.error}")
                continue
            self._record(task.name).total = total
            kept.append(dataclasses.replace(task, total=total))
        failed = len(self.tasks) - len(kept)
        self.tasks = kept
        self._save()
        return failed

    # --- what executors call -----------------------------------------------------------------------

    def begin(self, task: BagTask, worker: str) -> BagTask:
        """``task`` starts on ``worker``: a new attempt, recorded as running. Returns the attempt."""
        if self._first_bag is None:
            self._first_bag = time.perf_counter()
        record = self._record(task.name)
        record.attempts += 1
        record.state, record.error, record.worker = RUNNING, None, worker
        self._attempt[task.name] = record.attempts
        self.view.set_frames(task.name, 0)
        self._save()
        return dataclasses.replace(task, attempt=record.attempts)

    def progress(self, name: str, frames: int, attempt: int | None = None) -> None:
        """Frames processed so far (written + skipped) of the current attempt at bag ``name``."""
        if attempt is None or attempt == self._attempt.get(name):
            self.view.set_frames(name, frames)

    def finish_bag(self, outcome: BagOutcome) -> None:
        """Record an attempt's outcome (done, failed, or interrupted: pending again)."""
        if outcome.attempt != self._attempt.get(outcome.name):
            return  # a lost attempt that came back after all: its retry counts
        record = self._record(outcome.name)
        record.worker, record.seconds = outcome.worker, round(outcome.seconds, 3)
        record.frames, record.skipped = outcome.frames, len(outcome.skipped)
        self._skipped_lines[outcome.name] = list(outcome.skipped)
        for line in outcome.skipped:
            self.say(f"{outcome.name}: {line}")
        if outcome.state == DONE:
            record.state, record.error = DONE, None
            skipped = f", {len(outcome.skipped)} skipped" if outcome.skipped else ""
            self.say(f"done {outcome.name}: {outcome.frames} frame(s){skipped} in {outcome.seconds:.1f} s "
                     f"on {outcome.worker}")  # fmt: skip
            self.view.set_frames(outcome.name, outcome.frames + len(outcome.skipped))
        elif outcome.state == INTERRUPTED:
            record.state, record.error = PENDING, "interrupted (redone by the next run)"
        else:
            record.state, record.error = FAILED, outcome.error
            self.say(f"failed {outcome.name}: {outcome.error}")
            self._drop_frames(outcome.name)
        self._attempt.pop(outcome.name, None)
        self._count_finished()
        self._save()

    def lost(self, task: BagTask, reason: str) -> bool:
        """The worker of ``task`` died mid-bag (killed, out of memory, node lost). Returns True
        when the bag is to be tried again (from scratch), False when it is failed for good."""
        record = self._record(task.name)
        self.view.set_frames(task.name, 0)
        self._attempt.pop(task.name, None)
        # Whatever the lost attempt wrote (should its worker still be alive, it fails writing
        # and its outcome, of a stale attempt, is ignored).
        shutil.rmtree(task.staging, ignore_errors=True)
        if record.attempts < self.max_attempts:
            record.state, record.error = PENDING, f"worker {record.worker} lost: {reason}"
            self.say(f"retrying {task.name} (attempt {record.attempts} of {self.max_attempts} lost its "
                     f"worker {record.worker}: {reason})")  # fmt: skip
        else:
            record.state = FAILED
            record.error = f"worker lost {record.attempts} time(s), last {record.worker}: {reason}"
            self.say(f"failed {task.name}: {record.error}")
            self._drop_frames(task.name)
            self._count_finished()
        self._save()
        return record.state == PENDING

    def abandon(self, task: BagTask, reason: str) -> None:
        """``task`` cannot be run at all (no worker left): left ``pending`` with ``reason``
        (the bag is not at fault; a re-run tries it)."""
        record = self._record(task.name)
        record.state, record.error = PENDING, reason
        self.say(f"left {task.name}: {reason}")
        self._drop_frames(task.name)
        self._count_finished()
        self._save()

    def say(self, line: str) -> None:
        """A line on the stream, above the progress view."""
        self.view.say(line)

    # --- progress view -----------------------------------------------------------------------------

    def start_progress(self) -> None:
        """Open the progress view: bags done of this run's, frames, frames/s and time left
        (once; later calls do nothing)."""
        self.view.open(sum(t.total or 0 for t in self.tasks), self._bags_text())

    def _bags_text(self) -> str:
        finished = sum(1 for t in self.tasks if self._record(t.name).state in (DONE, FAILED))
        return f"bags {finished}/{len(self.tasks)}"

    def _drop_frames(self, name: str) -> None:
        """A failed bag's frames will never come: take them off the view's total."""
        task = next((t for t in self.tasks if t.name == name), None)
        self.view.drop(name, task.total if task is not None else None)

    def _count_finished(self) -> None:
        self.view.title(self._bags_text())

    # --- the end ----------------------------------------------------------------------------------

    def close(self) -> int:
        """Record the end (a bag still running after Ctrl-C is pending again), write the summary,
        print the last line; the exit status: 0 all done, 1 a bag failed or is left, 130 Ctrl-C."""
        with deferred_interrupts():
            for name in self.names:
                record = self._record(name)
                if record.state == RUNNING:  # its worker was stopped: what it wrote is staging
                    record.state, record.error = PENDING, "interrupted (redone by the next run)"
                    shutil.rmtree(self.output_dir / STAGING / f"{name}.{record.attempts}", ignore_errors=True)
            with contextlib.suppress(OSError):  # empty: every attempt ended cleanly
                (self.output_dir / STAGING).rmdir()
            self._save()
            self.view.close()
            summary = self.summary()
            text = json.dumps(summary, indent=2) + "\n"
            atomic_write(self.output_dir / SUMMARY, lambda f: f.write(text.encode()))
            counts = summary["bag_counts"]
            before = f" ({counts['done_before']} before this run)" if counts["done_before"] else ""
            failed = f", {counts['failed']} failed" if counts["failed"] else ""
            left = f", {counts['pending']} left" if counts["pending"] else ""
            rate = (
                f"{summary['frames']} frame(s) in {summary['wall_seconds']:.1f} s "
                f"({summary['frames_per_second']:.2f} frames/s)"
            )
            text = (
                f"{len(self.names)} bag(s) in {self.output_dir}: {counts['done']} done{before}{failed}"
                f"{left}; {rate}; summary {self.output_dir / SUMMARY}"
            )
            if self.interrupted:
                self.say(f"interrupted: {text}; the done bags are valid, a re-run does the rest")
                return EXIT_INTERRUPTED
            self.say(f"wrote {text}")
            return EXIT_FAILED if counts["failed"] or counts["pending"] else EXIT_OK

    def summary(self) -> dict[str, Any]:
        """The run's summary (``DIR/summary.json``): settings, execution, totals and each bag's line."""
        wall = time.perf_counter() - self._began
        bags = []
        for name in self.names:
            record = self._record(name)
            entry = {"name": name, **dataclasses.asdict(record), "done_before": name in self.done_before}
            entry["skipped_frames"] = self._skipped_lines.get(name, [])
            bags.append(entry)
        this_run = [b for b in bags if not b["done_before"]]
        frames = sum(b["frames"] for b in this_run if b["state"] == DONE)
        startup = (self._first_bag - self._began) if self._first_bag is not None else wall
        return {
            "command": self.command,
            "started": self.started,
            "finished": now(),
            "wall_seconds": round(wall, 3),
            # checks, model loading, starting Ray and its workers: until the first bag began
            "startup_seconds": round(startup, 3),
            "interrupted": self.interrupted,
            "output_dir": str(self.output_dir),
            "settings": self.settings,
            "execution": self.execution,
            "bag_counts": {
                "total": len(bags),
                "done": sum(b["state"] == DONE for b in bags),
                "done_before": len(self.done_before),
                "failed": sum(b["state"] == FAILED for b in bags),
                "pending": sum(b["state"] in (PENDING, RUNNING) for b in bags),
            },
            "frames": frames,
            "skipped_frames": sum(b["skipped"] for b in this_run if b["state"] == DONE),
            "frames_per_second": round(frames / wall, 3) if wall > 0 else 0.0,
            "frames_per_second_after_startup": round(frames / (wall - startup), 3) if wall > startup else 0.0,
            "bags": bags,
        }

    def _record(self, name: str) -> BagRecord:
        assert self.manifest is not None, "use FleetRun as a context manager"
        return self.manifest.bags[name]

    def _save(self) -> None:
        assert self.manifest is not None
        self.manifest.save()


def run_fleet(run: FleetRun, probe: Callable[[BagTask], int], execute: Callable[[FleetRun], None]) -> int:
    """Plan, check, execute and close ``run``; Ctrl-C (or SIGTERM) anywhere leaves the done bags
    and a true manifest. Returns the exit status (:meth:`FleetRun.close`).

    Raises:
        FleetError: the run cannot start (:meth:`FleetRun.__enter__`).
    """
    with sigterm_as_interrupt(), run:
        try:
            failed = run.check(probe)
            unreadable = f", {failed} cannot be processed" if failed else ""
            run.say(
                f"{len(run.names)} bag(s): {len(run.done_before)} done before{unreadable}, "
                f"{len(run.tasks)} to process ({sum(t.total or 0 for t in run.tasks)} frame(s)) "
                f"into {run.output_dir}"
            )
            if run.tasks:
                execute(run)
        except KeyboardInterrupt:
            run.interrupted = True
        return run.close()


def run_sequential(run: FleetRun, worker: Any) -> None:
    """The bags one after another in this process, with one worker (one Predictor).

    ``worker`` is a :class:`~rt_panoptic_ros.ros.bag.worker.BagWorker` (or anything with its
    ``name`` and ``process(task, progress)``). Ctrl-C inside a bag ends that bag's attempt
    (nothing written) and raises ``KeyboardInterrupt``.
    """
    run.execution = {"mode": "sequential", "workers": 1, **getattr(worker, "description", {})}
    run.start_progress()
    for planned in run.tasks:
        task = run.begin(planned, worker.name)
        outcome = worker.process(task, lambda frames, t=task: run.progress(t.name, frames, t.attempt))
        run.finish_bag(outcome)
        if outcome.state == INTERRUPTED:
            raise KeyboardInterrupt

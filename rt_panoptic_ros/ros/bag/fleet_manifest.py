"""What a fleet run writes down: the output folder's names, each bag's task, outcome and
manifest record, and the options every bag is processed with (ROS-free, Ray-free).

``DIR/manifest.json`` (:class:`Manifest`) holds the run's settings and one :class:`BagRecord` per
bag, by output name: input, output, state (``pending`` / ``running`` / ``done`` / ``failed``),
error line, frames, skipped frames, seconds, worker and attempts. It is written atomically at
every change, so it is true whenever the run stops.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rt_panoptic_ros.atomic_files import atomic_write
from rt_panoptic_ros.errors import RTPanopticError, first_line

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
#: Where unfinished bags are written (one folder per bag and attempt), hidden in DIR.
STAGING = ".incomplete"
LOCK = ".lock"
#: Names in DIR that are not output bags.
RESERVED = (MANIFEST, SUMMARY, STAGING, LOCK)
MANIFEST_FORMAT = "rt_panoptic_ros.fleet/1"

#: A bag's states in the manifest. ``running`` on disk after the run ended means the run was
#: killed mid-bag: the next run redoes it.
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
#: An outcome's state when Ctrl-C stopped the bag (recorded as ``pending``).
INTERRUPTED = "interrupted"
#: Tries of one bag whose worker died (killed, out of memory, node lost) before it is failed.
DEFAULT_MAX_ATTEMPTS = 3


class FleetError(RTPanopticError):
    """A fleet run cannot start as asked: an output folder in use or made with other settings,
    two bags of one name, an output that is not ours to replace; one line naming it."""


# --- what every bag is processed with ---------------------------------------------------------


@dataclass(frozen=True)
class BagOptions:
    """The per-bag settings of a run, the same for every bag: the image topic, and the keyword
    arguments of :class:`~rt_panoptic_ros.ros.bag.processing.BagJob` (``overlay``, ``start_s``,
    ``tracking``, ...) and of its ``run``, passed through as the CLI built them.

    Picklable, so that Ray ships it to the workers as it is.
    """

    image_topic: str
    job: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """JSON of what decides the outputs' content (recorded in the manifest)."""
        return {"image_topic": self.image_topic, **{k: _jsonable(v) for k, v in sorted(self.job.items())}}


@dataclass(frozen=True)
class ModelOptions:
    """The Predictor of each worker: model file, backend, device and CPU threads for torch."""

    model: Path
    backend: str = "auto"
    device: str | None = None
    threads: int | None = None

    def load(self):
        """The Predictor (``torch.set_num_threads(threads)`` first, when given)."""
        import torch

        from rt_panoptic_ros.runtime.predictor import Predictor

        if self.threads:
            torch.set_num_threads(self.threads)
        return Predictor(self.model, device=self.device, backend=self.backend)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return repr(value)


def worker_name() -> str:
    """``host:pid`` of this process: where a bag was processed (and which process to look at)."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- bags, attempts and outcomes ----------------------------------------------------------------


@dataclass(frozen=True)
class BagTask:
    """One attempt at one bag: input, final output, attempt number (1, 2, ...) and frames expected."""

    name: str
    source: Path
    output: Path
    attempt: int = 0
    total: int | None = None

    @property
    def staging(self) -> Path:
        """This attempt's own folder (a lost attempt that is still running never meets a retry)."""
        return self.output.parent / STAGING / f"{self.name}.{self.attempt}"

    @property
    def staged(self) -> Path:
        """The bag as written, before it is moved to :attr:`output` (keeps the output's name,
        which rosbags gives the storage file)."""
        return self.staging / self.name


@dataclass
class BagOutcome:
    """What a worker reports for one attempt.

    Attributes:
        state: :data:`DONE` (the bag is at its output path), :data:`FAILED` (``error`` says
            why; nothing was written) or :data:`INTERRUPTED` (Ctrl-C; nothing was written).
        frames: frames written; skipped: one line per frame that could not be segmented.
    """

    name: str
    attempt: int
    state: str
    worker: str
    frames: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


@dataclass
class BagRecord:
    """A bag's line in the manifest."""

    input: str
    output: str
    state: str = PENDING
    error: str | None = None
    frames: int = 0
    skipped: int = 0
    seconds: float = 0.0
    worker: str | None = None
    attempts: int = 0
    total: int | None = None


class Manifest:
    """``DIR/manifest.json``: the run's settings and every bag's :class:`BagRecord`, by output name."""

    def __init__(
        self, path: Path, settings: dict[str, Any], bags: dict[str, BagRecord] | None = None
    ) -> None:
        self.path, self.settings = path, settings
        self.bags: dict[str, BagRecord] = bags or {}

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        """The manifest at ``path``, or ``None`` when there is none.

        Raises:
            FleetError: the file is not a manifest of this tool.
        """
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {MANIFEST_FORMAT!r}")
            bags = {name: BagRecord(**record) for name, record in data["bags"].items()}
            return cls(path, data["settings"], bags)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise FleetError(f"{path}: not a manifest of rt-panoptic-bag ({first_line(error)})") from None

    def save(self) -> None:
        """Write it atomically: a crash leaves the previous manifest, never a truncated one."""
        data = {
            "format": MANIFEST_FORMAT,
            "updated": now(),
            "settings": self.settings,
            "bags": {name: dataclasses.asdict(record) for name, record in self.bags.items()},
        }
        text = json.dumps(data, indent=1) + "\n"
        atomic_write(self.path, lambda f: f.write(text.encode()))


def output_name(source: Path) -> str:
    """The output bag's name: the input bag folder's name (a bare ``x.db3``/``x.mcap``: ``x``)."""
    return source.stem if source.is_file() else source.name


# --- the run --------------------------------------------------------------------------------------


def now() -> str:
    """The time now, UTC, ISO 8601 to the second (manifest, lock, summary)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

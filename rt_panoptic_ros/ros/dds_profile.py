"""The shipped Fast DDS profile for large images, and whether this process uses it.

Fast DDS reads its XML profile once, when the process creates its first DDS participant
(``rclpy.init``), from ``FASTDDS_DEFAULT_PROFILES_FILE`` (or the legacy
``FASTRTPS_DEFAULT_PROFILES_FILE``, or ``DEFAULT_FASTDDS_PROFILES.xml`` in the working
directory). So the choice is made on the environment, before init: :func:`use_shipped_profile`
points ``FASTDDS_DEFAULT_PROFILES_FILE`` at ``config/fastdds_large_images.xml`` unless

- the user already gave Fast DDS a profile (any of the three above): theirs wins;
- ``RT_PANOPTIC_DDS_PROFILE=off`` (or ``0``, ``false``, ``no``, ``none``) turns ours off;
- ``RMW_IMPLEMENTATION`` names another middleware (Cyclone DDS, Zenoh, ...): nothing to do.

Why it is on by default (``benchmarks/dds.json``, Fast DDS 3.2, two processes, 1024×2048):
with the defaults a best-effort reader received 0 of 20 rgb8 frames, and the node's four
outputs of a frame (12.3 MB) reached a default subscriber in 543 ms median, up to 1.0 s, as
lost fragments waited for the writer's heartbeat; with the profile in the publishing process,
20 of 20 and 15-18 ms. Its large shared-memory segment holds whole frames; its UDPv4 transport
keeps every other peer (other machines, processes without the profile) reachable.

Plain code (no rclpy): the node's ``main``, the launch file's process, the demo and the
tests' helper processes all call it before their ``rclpy.init``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rt_panoptic_ros.ros.bundled import share_candidates

PACKAGE = "rt_panoptic_ros"
PROFILE_NAME = "fastdds_large_images.xml"
#: The switch: ``off`` keeps Fast DDS's defaults in this process.
SWITCH = "RT_PANOPTIC_DDS_PROFILE"
OFF_VALUES = ("off", "0", "false", "no", "none")
#: Where Fast DDS looks for a profile file, newest name first.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
#: The file Fast DDS loads from the working directory when no variable names one.
WORKING_DIRECTORY_PROFILE = "DEFAULT_FASTDDS_PROFILES.xml"


@dataclass(frozen=True)
class ProfileChoice:
    """The Fast DDS profile a process uses, and why.

    Attributes:
        path: the XML file in effect, or ``None`` (Fast DDS defaults, or not Fast DDS).
        source: ``"shipped"`` (ours, also when a parent process set it), ``"user"`` (one
            already set), ``"off"`` (turned off with ``RT_PANOPTIC_DDS_PROFILE``),
            ``"other middleware"`` or ``"missing"`` (ours is not installed).
    """

    path: str | None
    source: str

    @property
    def shipped(self) -> bool:
        return self.source == "shipped"

    def describe(self) -> str:
        """One line for the log and the diagnostics."""
        if self.source == "shipped":
            return f"Fast DDS profile {self.path} (shipped; {SWITCH}=off to turn it off)"
        if self.source == "user":
            return f"Fast DDS profile {self.path} (set by the user)"
        if self.source == "off":
            return f"Fast DDS defaults ({SWITCH}=off)"
        if self.source == "other middleware":
            return "no Fast DDS profile (RMW_IMPLEMENTATION is not Fast DDS)"
        return f"Fast DDS defaults ({PROFILE_NAME} not found; large best-effort frames may be lost)"


def choose_profile(environ: Mapping[str, str], shipped: Path | None, cwd: Path) -> ProfileChoice:
    """Which profile a process with ``environ`` (started in ``cwd``) should use.

    Args:
        environ: the process environment.
        shipped: the shipped profile's path (:func:`shipped_profile_path`), ``None`` if absent.
        cwd: the working directory (Fast DDS also loads ``DEFAULT_FASTDDS_PROFILES.xml`` there).
    """
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return ProfileChoice(None, "other middleware")
    for name in PROFILE_VARIABLES:
        if environ.get(name):
            ours = shipped is not None and Path(environ[name]).resolve() == shipped.resolve()
            return ProfileChoice(environ[name], "shipped" if ours else "user")
    if (cwd / WORKING_DIRECTORY_PROFILE).is_file():
        return ProfileChoice(str(cwd / WORKING_DIRECTORY_PROFILE), "user")
    if environ.get(SWITCH, "").strip().lower() in OFF_VALUES:
        return ProfileChoice(None, "off")
    if shipped is None:
        return ProfileChoice(None, "missing")
    return ProfileChoice(str(shipped), "shipped")


def profile_candidates(module_file: Path = Path(__file__)) -> list[Path]:
    """Where the shipped profile may be, in order (:func:`~rt_panoptic_ros.ros.bundled.share_candidates`:
    setup.py installs ``config/*.xml`` into the package share). ``module_file``: this module's
    path (another one in tests)."""
    return share_candidates(f"config/{PROFILE_NAME}", module_file)


def shipped_profile_path(candidates: Sequence[Path] | None = None) -> Path | None:
    """The first of ``candidates`` (default :func:`profile_candidates`) that exists, or ``None``."""
    candidates = profile_candidates() if candidates is None else candidates
    return next((path for path in candidates if path.is_file()), None)


def use_shipped_profile(environ: MutableMapping[str, str] | None = None) -> ProfileChoice:
    """Give this process (and the processes it starts) the shipped profile where it applies.

    Sets ``FASTDDS_DEFAULT_PROFILES_FILE`` in ``environ`` (``os.environ`` by default) when
    :func:`choose_profile` picks ours. Call it before ``rclpy.init``: Fast DDS reads the
    variable only when the process creates its first participant.
    """
    environ = os.environ if environ is None else environ
    choice = choose_profile(environ, shipped_profile_path(), Path.cwd())
    if choice.shipped:
        environ[PROFILE_VARIABLES[0]] = str(choice.path)
    return choice


def without_profile(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` for a process that must run with Fast DDS's defaults."""
    env = {k: v for k, v in environ.items() if k not in PROFILE_VARIABLES}
    env[SWITCH] = "off"
    return env

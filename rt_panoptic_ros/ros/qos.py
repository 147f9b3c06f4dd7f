"""Which reliability the node subscribes with: the camera's own, unless the user says otherwise.

Plain functions (no rclpy), so every rule is tested without ROS; the node turns the publishers
it sees on its input topic (``get_publishers_info_by_topic``) into strings and wires the result.

Why ``auto`` is the default (measured on this project's machine, Fast DDS 3.2, two processes,
``benchmarks/dds.json``): a best-effort subscription to a *reliable* camera (its process without
the shipped profile) received 2 of 20 1024×2048 rgb8 frames (the issue saw 0 of 20 at
512×1024), a reliable one 20 of 20; a reliable subscription cannot match a *best-effort* camera at all (the
most common "no output" report against ROS 2 detection nodes). Matching each camera's
reliability is the only choice that works for both, and keep-last ``qos_depth`` (1) stops a
queue of stale frames from building up either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

AUTO, RELIABLE, BEST_EFFORT = "auto", "reliable", "best_effort"
#: Values of the ``qos_reliability`` parameter.
RELIABILITY_SETTINGS = (AUTO, BEST_EFFORT, RELIABLE)
#: What to do when a best-effort camera's large frames do not arrive (benchmarks/dds.json: with
#: Fast DDS defaults 0 of 20 1024×2048 frames arrived; with the profile in the camera's process, 20).
BEST_EFFORT_HINT = (
    "large best-effort frames arrive only when the camera's process has a Fast DDS profile with a "
    "large shared-memory segment (config/fastdds_large_images.xml, see the README)"
)
#: Values of the ``output_reliability`` parameter.
OUTPUT_RELIABILITY_SETTINGS = (RELIABLE, BEST_EFFORT)


@dataclass(frozen=True)
class InputQos:
    """The input subscription's reliability and why.

    Attributes:
        reliability: ``"reliable"`` or ``"best_effort"``.
        reason: one line for the log and the diagnostics, e.g.
            ``"auto: 1 publisher, all reliable"``.
        warning: a mismatch worth a warning (publishers that cannot connect, or a reliable
            camera read best effort, which loses large frames), or ``None``.
        hint: advice for the info log line, or ``None``.
    """

    reliability: str
    reason: str
    warning: str | None = None
    hint: str | None = None

    def describe(self) -> str:
        return f"{self.reliability} ({self.reason})"


def choose_input_qos(setting: str, publishers: Sequence[str], current: str | None = None) -> InputQos:
    """The reliability to subscribe with, given ``qos_reliability`` and the input's publishers.

    Args:
        setting: ``"auto"``, ``"reliable"`` or ``"best_effort"`` (the parameter's value).
        publishers: the reliability of each publisher on the input topic (``"reliable"``,
            ``"best_effort"``, or anything else the middleware reports, e.g. ``"unknown"``).
        current: the reliability subscribed with now (``None`` before the first subscription).

    ``auto``: reliable when all publishers publish reliable, best effort as soon as one does
    not (a best-effort subscription matches every publisher, a reliable one ignores best-effort
    ones). With no publisher it keeps ``current`` (a camera that restarts is heard again at
    once) or, at start-up, takes reliable: most drivers and ``ros2 bag play`` publish reliably,
    and a reliable pair delivers a frame sent the moment the camera has matched, before the
    subscription has (the writer repairs it), where a best-effort one drops it. The node
    re-evaluates as publishers come and go.
    The explicit settings are returned as they are, with a warning when they do not suit the
    publishers.
    """
    best_effort = sum(1 for p in publishers if p != RELIABLE)
    count = f"{len(publishers)} publisher{'s' if len(publishers) != 1 else ''}"
    if setting == RELIABLE:
        warning = None
        if best_effort:
            warning = (
                f"qos_reliability is reliable but {best_effort} of {count} publish best effort: "
                "they cannot connect (use qos_reliability auto or best_effort)"
            )
        return InputQos(RELIABLE, f"qos_reliability, {count}", warning)
    if setting == BEST_EFFORT:
        warning = None
        if publishers and not best_effort:
            warning = (
                f"qos_reliability is best_effort but all {count} publish reliable: large frames "
                "are lost in transport without the Fast DDS profile in the camera's process "
                "(use qos_reliability auto or reliable)"
            )
        return InputQos(BEST_EFFORT, f"qos_reliability, {count}", warning)
    if setting != AUTO:
        raise ValueError(f"qos_reliability: {setting!r} is not one of {', '.join(RELIABILITY_SETTINGS)}")
    if not publishers:
        return InputQos(current if current in (RELIABLE, BEST_EFFORT) else RELIABLE, "auto: no publisher")
    if not best_effort:
        return InputQos(RELIABLE, f"auto: {count}, all reliable")
    return InputQos(
        BEST_EFFORT,
        f"auto: {best_effort} of {count} best effort",
        hint=BEST_EFFORT_HINT,
    )

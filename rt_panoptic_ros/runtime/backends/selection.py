"""``backend="auto"``: the fastest backend this machine and this model file can run.

Order: TensorRT (CUDA), else torch on CUDA, else ONNX Runtime on the CPU, else torch on the
CPU. A candidate is skipped, with its reason, when its library or a CUDA device is missing,
when an explicit ``device`` rules it out, or when the model's form does not suit it (TensorRT
needs a file and a fixed input size; torch needs the ``.pt`` or the network).

:func:`choose_backend` is a pure function of what :func:`probe` finds, so it can be tested
for every machine on any machine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from rt_panoptic_ros.errors import EngineError


@dataclass(frozen=True)
class Availability:
    """What this machine has: a CUDA device, the tensorrt and onnxruntime packages."""

    cuda: bool
    tensorrt: bool
    onnxruntime: bool


def probe() -> Availability:
    """Look (cheaply, without importing TensorRT) at what this machine has."""
    return Availability(
        cuda=torch.cuda.is_available(),
        tensorrt=importlib.util.find_spec("tensorrt") is not None,
        onnxruntime=importlib.util.find_spec("onnxruntime") is not None,
    )


@dataclass(frozen=True)
class Choice:
    """The backend and device ``auto`` picked, and why (one line for the log)."""

    backend: str
    device: torch.device
    reason: str


def choose_backend(
    available: Availability, source_kind: str, fixed_shape: bool, device: torch.device | None = None
) -> Choice:
    """Pick the first usable of tensorrt, torch (CUDA), onnxruntime (CPU), torch (CPU).

    Args:
        source_kind: ``memory``, ``checkpoint``, ``onnx`` or ``engine`` (a
            :class:`~rt_panoptic_ros.runtime.sources.ModelSource`'s kind).
        fixed_shape: whether the input size is fixed (TensorRT engines have one).
        device: ``None`` for any; ``cpu`` or ``cuda[:k]`` restricts the candidates.

    Raises:
        EngineError: no candidate is usable (each one's reason is listed).
    """
    cuda_device = device if device is not None and device.type == "cuda" else torch.device("cuda")
    has_network = source_kind in ("memory", "checkpoint")
    candidates = [
        ("tensorrt", cuda_device, [
            (device is not None and device.type != "cuda", f"device {device} was asked for"),
            (not available.cuda, "no CUDA device"),
            (not available.tensorrt, "the tensorrt package is not installed"),
            (source_kind == "memory", "needs a model file"),
            (not fixed_shape and source_kind != "engine", "needs a fixed input size"),
        ]),
        ("torch", cuda_device, [
            (device is not None and device.type != "cuda", f"device {device} was asked for"),
            (not available.cuda, "no CUDA device"),
            (not has_network, f"cannot run an {source_kind} file"),
        ]),
        ("onnxruntime", torch.device("cpu"), [
            (device is not None and device.type != "cpu", f"device {device} was asked for"),
            (not available.onnxruntime, "the onnxruntime package is not installed"),
            (source_kind == "engine", "cannot run an engine file"),
        ]),
        ("torch", torch.device("cpu"), [
            (device is not None and device.type != "cpu", f"device {device} was asked for"),
            (not has_network, f"cannot run an {source_kind} file"),
        ]),
    ]  # fmt: skip
    skipped = []
    for backend, where, rules in candidates:
        why_not = next((reason for failed, reason in rules if failed), None)
        if why_not is None:
            because = f" (skipped {'; '.join(skipped)})" if skipped else " (the first choice)"
            return Choice(backend, where, f"auto: {backend} on {where.type}{because}")
        skipped.append(f"{backend} on {where.type}: {why_not}")
    raise EngineError(f"backend auto: nothing can run this model here ({'; '.join(skipped)})")

"""Torch devices named by users (``--device``, the node's ``device`` parameter), checked once.

A device this machine does not have is refused here with one line that says so, instead of
the many-line errors torch raises on first use (``cuda`` on a machine without a GPU, ``cuda:3``
on one with two, a typo).
"""

from __future__ import annotations

import torch

from rt_panoptic_ros.errors import ConfigError, EngineError


def resolve_device(spec: str | torch.device | None, where: str = "device") -> torch.device | None:
    """``spec`` as a :class:`torch.device` this machine has (``None`` stays ``None``).

    Raises:
        ConfigError: not a device name, or a device type other than cpu and cuda.
        EngineError: a CUDA device this machine does not have.
    """
    if spec is None:
        return None
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"{where}: {str(spec)!r} is not a device (expected cpu, cuda, cuda:0, ...)"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"{where}: {device} is not supported (expected cpu, cuda, cuda:0, ...)")
    if not torch.cuda.is_available():
        raise EngineError(f"{where}: {device}: this machine has no CUDA device (use cpu)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise EngineError(
            f"{where}: {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
        )
    return device

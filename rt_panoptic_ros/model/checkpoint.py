"""Self-describing model files: weights + config + format version.

A checkpoint is a ``torch.save``'d dictionary::

    {"format": "rt_panoptic_ros.checkpoint", "format_version": 1,
     "config": Config.to_dict(), "model": state_dict, "meta": {...}}

Training checkpoints add optimizer, scheduler, step and RNG states beside these keys; this
module reads only what inference needs. Files are read with ``weights_only=True``, so a
model file cannot run code when it is loaded.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rt_panoptic_ros.atomic_files import atomic_write
from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import CheckpointError, ConfigError
from rt_panoptic_ros.model.network import RTPanoNet

FORMAT = "rt_panoptic_ros.checkpoint"
FORMAT_VERSION = 1
#: How many key names an error message lists before "and N more".
_NAMES_SHOWN = 3


def save_checkpoint(
    model: RTPanoNet, path: str | Path, meta: Mapping[str, Any] | None = None, **extra: Any
) -> Path:
    """Write ``model`` (weights and config) to ``path`` atomically (temp file + rename).

    Args:
        meta: free-form, weights_only-safe information (source, training step, ...).
        extra: more top-level entries (training state); they must be weights_only-safe too.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.cfg.to_dict(),
        "model": model.state_dict(),
        "meta": dict(meta or {}),
        **extra,
    }
    atomic_torch_save(payload, path)
    return path


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` atomically (:func:`~rt_panoptic_ros.atomic_files.atomic_write`): a crash
    mid-write leaves the previous file intact instead of a truncated one."""
    atomic_write(path, lambda f: torch.save(payload, f))


def read_torch_file(path: str | Path) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``, as one clear error if it fails."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a model file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_sentence(error)})") from None
        # torch's own message suggests turning safe loading off: never suggest that here.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found:
            raise CheckpointError(
                f"{path}: not a model file: it holds a Python object ({found.group(1)}) that only running "
                "code could rebuild; refused for safety (model files hold tensors and plain values)"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(error))
        reason = f" ({detail.group(1).strip()})" if detail else ""
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint: safe loading cannot read it{reason}; refused for safety"
        ) from None
    except Exception as error:  # torch raises many types for a bad file; all mean the same here
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_sentence(error)})") from None


def _first_sentence(error: Exception) -> str:
    """The first sentence of an error's first line (a whole one, not cut mid-word)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    end = text.find(". ")
    return text[: end + 1] if 0 < end else text


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check an rt_panoptic_ros checkpoint; returns its dictionary.

    Raises:
        CheckpointError: missing file, not a torch file, not our format, newer format version.
    """
    data = read_torch_file(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        if isinstance(data, dict) and data and all(isinstance(v, Tensor) for v in data.values()):
            raise CheckpointError(
                f"{path}: a bare state dict, not an rt_panoptic_ros checkpoint "
                "(convert it first: rt-panoptic-convert --from tri IN.pth OUT.pt)"
            )
        raise CheckpointError(f"{path}: not an rt_panoptic_ros checkpoint (no 'format' entry)")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this rt_panoptic_ros reads up to "
            f"{FORMAT_VERSION} (upgrade the package)"
        )
    for key in ("config", "model"):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint has no '{key}' dictionary")
    return data


def load_model(path: str | Path, device: str | torch.device = "cpu") -> RTPanoNet:
    """Build the network a checkpoint describes, load its weights, and put it in eval mode.

    Args:
        path: a file written by :func:`save_checkpoint` (or ``rt-panoptic-convert``).
        device: where the model lives (``"cpu"``, ``"cuda:0"``, ...).

    Raises:
        CheckpointError: the file is missing, not a checkpoint, or its weights do not fit
            the network its config describes (the first few offending keys are named).
    """
    data = load_checkpoint(path)
    try:
        cfg = Config.from_dict(data["config"], source=f"{path}: config")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    model = RTPanoNet(cfg)
    load_weights(model, data["model"], source=str(path))
    return model.to(device).eval()


def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """``model.load_state_dict(state_dict)``, but every mismatch becomes one readable line.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys, naming the first few of each.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {_shape_of(state_dict[k])} (expected {list(expected[k].shape)})"
        for k in expected
        if k in state_dict and _shape_of(state_dict[k]) != list(expected[k].shape)
    ]
    problems = [
        _describe(f"{len(names)} {kind}", names)
        for kind, names in (
            ("missing key(s)", missing),
            ("unexpected key(s)", unexpected),
            ("mis-shaped key(s)", misshaped),
        )
        if names
    ]
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the network: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def _shape_of(value: Any) -> list[int] | str:
    return list(value.shape) if isinstance(value, Tensor) else type(value).__name__


def _describe(label: str, names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    return f"{label}: {shown}{more}"

"""The training state on disk: a model file with everything needed to continue exactly.

``OUT/last.pt`` (written atomically: temp file + rename) holds the model and its config, so
:func:`rt_panoptic_ros.load_model` reads it as any model file, plus under ``"training"``: the
optimizer, scheduler and gradient-scaler states, the step, every RNG state, the training config
and the number of processes. :meth:`Checkpointer.resume` puts all of it back, so a resumed run
draws the same batches and augmentation and ends with the same weights as one that never
stopped (``test/test_train.py``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rt_panoptic_ros.errors import CheckpointError
from rt_panoptic_ros.model import RTPanoNet
from rt_panoptic_ros.model.checkpoint import load_checkpoint, load_weights, save_checkpoint

#: Marks a checkpoint written by this trainer (beside the model file format of checkpoint.py).
TRAINING_STATE_VERSION = 1
CHECKPOINT_NAME = "last.pt"
FINAL_MODEL_NAME = "model_final.pt"


class Checkpointer:
    """Writes and reads the training state of one run.

    Args:
        model: the network (not a DDP wrapper: its state dict has no ``module.`` prefix).
        optimizer, scheduler, scaler: what else changes from step to step.
    """

    def __init__(
        self,
        model: RTPanoNet,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
    ):
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        #: The last checkpoint written or resumed from; named when training has to stop.
        self.last: Path | None = None

    def save(self, path: Path, step: int, meta: dict[str, Any], extra: dict[str, Any]) -> Path:
        """Write the full training state at ``step`` to ``path`` atomically.

        Args:
            meta: the model file's ``meta`` (source, step, how the backbone was initialised).
            extra: more training state to keep (the training config, the number of processes).
        """
        save_checkpoint(
            self.model, path, meta=meta,
            training={
                "version": TRAINING_STATE_VERSION,
                "step": step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_states(),
                **extra,
            },
        )  # fmt: skip
        self.last = path
        return path

    def resume(self, path: Path) -> int:
        """Load a checkpoint :meth:`save` wrote; returns its step.

        Raises:
            CheckpointError: missing, torn, foreign, or for a different network.
        """
        data = load_checkpoint(path)  # missing / torn / foreign -> CheckpointError
        state = data.get("training")
        if not isinstance(state, dict) or state.get("version") != TRAINING_STATE_VERSION:
            raise CheckpointError(f"{path}: a model file without training state; cannot resume from it")
        load_weights(self.model, data["model"], source=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_states(state["rng"])
        self.last = path
        return int(state["step"])


def rng_states() -> dict[str, Any]:
    """Every RNG a step draws from, in weights_only-loadable types."""
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])

"""The optimiser and the learning-rate schedule of the paper (Sec. 5.3): SGD with momentum and
weight decay, a linear warm-up, then the rate multiplied by ``gamma`` at each milestone."""

from __future__ import annotations

import bisect
from typing import Any

import torch

from rt_panoptic_ros.training.train_config import SolverConfig


def build_optimizer(model: torch.nn.Module, solver: SolverConfig) -> torch.optim.SGD:
    """SGD over the parameters that train (frozen backbone stages are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=solver.lr, momentum=solver.momentum, weight_decay=solver.weight_decay)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, solver: SolverConfig) -> WarmupMultiStepLR:
    """The schedule ``solver`` describes, stepped once per optimiser step."""
    return WarmupMultiStepLR(
        optimizer, solver.milestones, solver.gamma, solver.warmup_steps, solver.warmup_factor
    )


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up from ``warmup_factor * lr`` over ``warmup_steps``, then ``x gamma`` at milestones.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> s = WarmupMultiStepLR(opt, (10,), gamma=0.1, warmup_steps=4, warmup_factor=0.5)
        >>> [round(s.factor(step), 3) for step in (0, 2, 4, 9, 10)]
        [0.5, 0.75, 1.0, 1.0, 0.1]
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: tuple[int, ...],
        gamma: float,
        warmup_steps: int,
        warmup_factor: float,
    ):
        self.milestones, self.gamma = sorted(milestones), gamma
        self.warmup_steps, self.warmup_factor = warmup_steps, warmup_factor
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The rate at ``step`` relative to the base rate."""
        warm = 1.0
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            warm = self.warmup_factor * (1 - alpha) + alpha
        return warm * self.gamma ** bisect.bisect_right(self.milestones, step)

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    #: What a checkpoint keeps: the position in the schedule, not its shape, which comes from
    #: the config, so a resumed run may be given more steps or other milestones.
    _STATE = ("last_epoch", "base_lrs", "_last_lr", "_step_count")

    def state_dict(self) -> dict[str, Any]:
        return {key: self.__dict__[key] for key in self._STATE if key in self.__dict__}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({key: state_dict[key] for key in self._STATE if key in state_dict})

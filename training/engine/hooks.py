"""What happens around the optimiser steps: progress, checkpoints, evaluation, TensorBoard.

A hook is called by :meth:`Trainer.train <rt_panoptic_ros.training.engine.trainer.Trainer.train>`
before the first step, after every step (with that step's :class:`StepReport`) and after the
last one, also when training stops on an error, so that it can close what it opened (as
detectron2's ``HookBase``). :func:`default_hooks` gives the ones a run uses, in the order they
run after a step: progress, checkpoint, evaluation, TensorBoard (last, so that it writes the
scores of an evaluation at the same step).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rt_panoptic_ros.training.losses import LOSS_NAMES

if TYPE_CHECKING:  # the trainer imports this module
    from rt_panoptic_ros.training.engine.trainer import Trainer


@dataclass
class StepReport:
    """What one step produced.

    Attributes:
        step: the step just done (1 for the first).
        losses: ``total`` and every term of :data:`LOSS_NAMES` (averaged over the processes),
            ``lr``, and ``images_per_s`` since the loop started.
        elapsed: seconds since the loop started.
        last: this is the run's last step (``max_steps``).
        scores: PQ, PQ_th, PQ_st and mIoU (percent) when the model was evaluated after it.
    """

    step: int
    losses: dict[str, float]
    elapsed: float
    last: bool
    scores: dict[str, float] = field(default_factory=dict)


class HookBase:
    """Does nothing; subclasses override what they need."""

    def before_train(self, trainer: Trainer) -> None:
        """Before the first step (of this run: a resumed run starts at ``trainer.step``)."""

    def after_step(self, trainer: Trainer, report: StepReport) -> None:
        """After each optimiser step."""

    def after_train(self, trainer: Trainer) -> None:
        """After the last step, or when training stopped on an error: release what was opened."""


def default_hooks(trainer: Trainer) -> list[HookBase]:
    """Progress, checkpoints, evaluation and TensorBoard as ``trainer.cfg.run`` says."""
    run = trainer.cfg.run
    hooks: list[HookBase] = [ProgressLogger(trainer.progress, trainer.dist.main)]
    if trainer.dist.main:
        hooks.append(PeriodicCheckpointer(run.checkpoint_every))
    if trainer.val_dataset is not None:
        hooks.append(PeriodicEvaluator(run.eval_every))  # every process: they wait for process 0
    if trainer.dist.main:
        hooks.append(TensorBoardWriter(trainer.output_dir / "tensorboard", run.log_every))
    return hooks


def log_step(step: int, log_every: int) -> bool:
    """Steps that are logged: the first, then every ``log_every``-th."""
    return step == 1 or step % log_every == 0


class ProgressLogger(HookBase):
    """A tqdm bar on a terminal (process 0); else, every ``run.log_every`` steps, one line on stderr
    (``step 20/4800 loss 5.7095 lr 0.00413 3.95 images/s, 12.1 s``, what benchmarks/train.py reads).

    Args:
        progress: show the bar; ``None``: when stderr is a terminal (tqdm's rule).
        main: this is process 0 (the others show and print nothing).
    """

    def __init__(self, progress: bool | None, main: bool):
        self.progress, self.main = progress, main
        self.bar: Any = None

    def before_train(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        disable = (not self.main) or (None if self.progress is None else not self.progress)
        self.bar = tqdm(
            total=trainer.max_steps, initial=trainer.step, desc="rt-panoptic-train", unit="step",
            disable=disable, dynamic_ncols=True,
        )  # fmt: skip

    def after_step(self, trainer: Trainer, report: StepReport) -> None:
        losses = report.losses
        self.bar.update(1)
        self.bar.set_postfix(
            loss=f"{losses['total']:.3f}", img_s=f"{losses['images_per_s']:.2f}", refresh=False
        )
        # A log file instead of a terminal: one line per logged step.
        if self.main and self.bar.disable and log_step(report.step, trainer.cfg.run.log_every):
            line = f"step {report.step}/{trainer.max_steps} loss {losses['total']:.4f} lr {losses['lr']:.5f}"
            print(
                f"{line} {losses['images_per_s']:.2f} images/s, {report.elapsed:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    def after_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class PeriodicCheckpointer(HookBase):
    """Writes ``OUT/last.pt`` every ``every`` steps and after the last one (process 0 only)."""

    def __init__(self, every: int):
        self.every = every

    def after_step(self, trainer: Trainer, report: StepReport) -> None:
        if report.last or report.step % self.every == 0:
            trainer.save()


class PeriodicEvaluator(HookBase):
    """Scores the model on ``data.val_root`` every ``every`` steps (0: never) and after the last.

    Process 0 evaluates and puts the scores in the step's report; the others wait for it, so
    that no process runs ahead into the next collective operation alone.
    """

    def __init__(self, every: int):
        self.every = every

    def after_step(self, trainer: Trainer, report: StepReport) -> None:
        if not (report.last or (self.every and report.step % self.every == 0)):
            return
        if trainer.dist.main:
            report.scores.update(trainer.validate())
        trainer.dist.barrier()


class TensorBoardWriter(HookBase):
    """Scalars for TensorBoard in ``folder``: ``loss/<name>``, ``lr`` and ``images_per_s`` every
    ``log_every`` steps, ``eval/<score>`` whenever the model was evaluated. Nothing when the
    optional tensorboard package is not installed."""

    def __init__(self, folder: Path, log_every: int):
        self.folder, self.log_every = folder, log_every
        self.writer: Any = None

    def before_train(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional at run time
            return
        self.writer = SummaryWriter(str(self.folder))

    def after_step(self, trainer: Trainer, report: StepReport) -> None:
        if self.writer is None:
            return
        if log_step(report.step, self.log_every):
            for name, value in report.losses.items():
                tag = f"loss/{name}" if name in LOSS_NAMES or name == "total" else name
                self.writer.add_scalar(tag, value, report.step)
        for name, value in report.scores.items():
            self.writer.add_scalar(f"eval/{name}", value, report.step)

    def after_train(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()

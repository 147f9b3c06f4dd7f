"""The training loop: one :class:`Trainer` per process, steps that read like the algorithm.

Under ``torchrun`` each process trains on its shard of every batch
(:class:`~rt_panoptic_ros.training.data.sampler.ResumableSampler`) and DDP averages the
gradients, so the same command runs on this CPU (gloo) and on 8 GPUs or several machines
(NCCL). Process 0 alone logs, writes checkpoints and evaluates (:mod:`.hooks`).

A step::

    targets = build_targets(batch)                     # Sec. 4.1, Eq. 8-10
    losses = panoptic_losses(model(images), targets)   # Eq. 11-18
    loss = total_loss(losses)                          # Eq. 19
    loss.backward(); clip; optimizer.step(); scheduler.step()

What surrounds the steps lives elsewhere: the data (``data/build.py``), the optimiser and the
schedule (``solver.py``), processes (``distributed.py``), the initial network
(``model_init.py``), checkpoints (:mod:`.checkpoint`), progress, TensorBoard, periodic
checkpoints and evaluation (:mod:`.hooks`), the validation scores (:mod:`.validation`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from rt_panoptic_ros.errors import ConfigError, DatasetError, RTPanopticError
from rt_panoptic_ros.model.checkpoint import save_checkpoint
from rt_panoptic_ros.training.data.build import Batch, build_dataset, train_batches
from rt_panoptic_ros.training.data.sampler import ResumableSampler
from rt_panoptic_ros.training.distributed import init_distributed
from rt_panoptic_ros.training.engine.checkpoint import CHECKPOINT_NAME, FINAL_MODEL_NAME, Checkpointer
from rt_panoptic_ros.training.engine.hooks import HookBase, StepReport, default_hooks
from rt_panoptic_ros.training.engine.validation import evaluate_model
from rt_panoptic_ros.training.losses import LOSS_NAMES, panoptic_losses, total_loss
from rt_panoptic_ros.training.model_init import build_model
from rt_panoptic_ros.training.solver import build_lr_scheduler, build_optimizer
from rt_panoptic_ros.training.targets import Targets, build_targets
from rt_panoptic_ros.training.train_config import TrainConfig, network

#: ``meta["source"]`` of the model files a run writes.
SOURCE = "rt-panoptic-train"


class TrainingError(RTPanopticError):
    """Training cannot go on (a non-finite loss, a bad resume)."""


class Trainer:
    """Trains one model as :class:`TrainConfig` says, writing to ``output_dir``.

    Args:
        cfg: the training configuration.
        output_dir: checkpoints (``last.pt``, ``model_final.pt``), TensorBoard events.
        device: where this process trains (``cuda:<local_rank>`` under torchrun on GPUs).
        max_steps: stop after this step (the schedule still follows ``cfg.solver.steps``).
        progress: show a tqdm bar (process 0 only); ``None``: on a terminal.
        hooks: what runs around the steps; default :func:`~.hooks.default_hooks`.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        output_dir: str | Path,
        device: torch.device | str = "cpu",
        max_steps: int | None = None,
        progress: bool | None = None,
        hooks: list[HookBase] | None = None,
    ):
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.dist = init_distributed(self.device)
        self.max_steps = min(max_steps or cfg.solver.steps, cfg.solver.steps)
        self.progress = progress
        solver = cfg.solver
        if solver.batch_size % self.dist.world:
            raise ConfigError(
                f"solver.batch_size: {solver.batch_size} is not divisible by {self.dist.world} processes"
            )
        self.batch_per_process = solver.batch_size // self.dist.world

        # Tiny gradients and momenta become denormal floats, which x86 CPUs handle in microcode:
        # flushing them to zero made the first CPU steps 20-40x faster here (10 s -> 0.3 s).
        torch.set_flush_denormal(True)
        torch.manual_seed(cfg.run.seed)  # the same initial weights in every process
        self.dataset = build_dataset(cfg, train=True)
        if len(self.dataset) < solver.batch_size:
            raise DatasetError(f"data.root: {len(self.dataset)} images, fewer than one batch")
        self.val_dataset = build_dataset(cfg, train=False) if cfg.data.val_root else None
        self.model_cfg = network(cfg, self.dataset.meta)
        self.model, self.init_note = build_model(self.model_cfg, cfg.run.imagenet)
        self.model.to(self.device).train()
        self.ddp = (
            torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.dist.world > 1
            else self.model
        )
        self.optimizer = build_optimizer(self.model, solver)
        self.scheduler = build_lr_scheduler(self.optimizer, solver)
        self.amp = solver.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.checkpointer = Checkpointer(self.model, self.optimizer, self.scheduler, self.scaler)
        self.step = 0
        self.sampler = ResumableSampler(len(self.dataset), self.dist.world, self.dist.rank, cfg.run.seed)
        self.hooks = hooks if hooks is not None else default_hooks(self)

    # ------------------------------------------------------------------------- checkpoints

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / CHECKPOINT_NAME

    @property
    def last_checkpoint(self) -> Path | None:
        """The last checkpoint written or resumed from, named when training has to stop."""
        return self.checkpointer.last

    def save(self, path: Path | None = None) -> Path:
        """Write the full training state atomically (process 0 only).

        Raises:
            TrainingError: a weight is not finite; the previous checkpoint stays as it was.
        """
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            kept = self.last_checkpoint or "none written yet"
            raise TrainingError(
                f"step {self.step}: non-finite weights; not saved, the last good checkpoint is {kept}"
            )
        extra = {"config": self.cfg.to_dict(), "world": self.dist.world}
        return self.checkpointer.save(path or self.checkpoint_path, self.step, self._meta(), extra)

    def resume(self, path: Path | None = None) -> None:
        """Continue from a checkpoint of this trainer.

        Raises:
            CheckpointError: missing, torn, foreign, or for a different network.
        """
        self.step = self.checkpointer.resume(path or self.checkpoint_path)

    def _meta(self) -> dict[str, object]:
        return {"source": SOURCE, "step": self.step, "init": self.init_note}

    # ---------------------------------------------------------------------------- the loop

    def batches(self) -> Iterator[Batch]:
        """Batches from step ``self.step`` on, epoch after epoch (exact on resume)."""
        return train_batches(
            self.dataset, self.sampler, self.batch_per_process, self.step, self.cfg.data.workers,
            pin_memory=self.device.type == "cuda",
        )  # fmt: skip

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step; returns the loss terms (averaged over processes) and the lr.

        Raises:
            TrainingError: a loss term is not finite (nothing is updated or saved).
        """
        assert self.model.training, "the model was put in eval mode"
        cfg = self.cfg
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            outputs = self.ddp(batch.images)
        level_sizes = [tuple(r.shape[-2:]) for r in outputs.box_reg]
        targets: Targets = build_targets(
            batch.instances, batch.semantic, batch.image_sizes, level_sizes,
            cfg.targets.level_bounds, cfg.targets.weak, cfg.targets.semantic_stride,
        )  # fmt: skip
        losses = panoptic_losses(outputs, targets, batch.image_sizes, cfg.loss, self.model_cfg.decoder)
        loss = total_loss(losses, cfg.loss)
        values = torch.stack([loss.detach(), *(losses[name].detach() for name in LOSS_NAMES)])
        if not torch.isfinite(values).all():
            names = ("total", *LOSS_NAMES)
            bad = [name for name, v in zip(names, values.tolist(), strict=True) if not math.isfinite(v)]
            kept = self.last_checkpoint or "none written yet"
            raise TrainingError(
                f"step {self.step + 1}: non-finite loss ({', '.join(bad)}); stopped without saving, "
                f"the last good checkpoint is {kept} (lower solver.lr or raise solver.warmup_steps)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.solver.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.solver.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        report = dict(zip(("total", *LOSS_NAMES), self.dist.mean(values).tolist(), strict=True))
        report["lr"] = self.optimizer.param_groups[0]["lr"]
        return report

    def train(self) -> dict[str, float]:
        """Run until ``max_steps``; returns the last step's losses (and scores when evaluated).

        Process 0 then writes ``OUT/model_final.pt`` (the model file without training state).
        """
        for hook in self.hooks:
            hook.before_train(self)
        report: StepReport | None = None
        started, start_step = time.perf_counter(), self.step
        try:
            for batch in self.batches():
                if self.step >= self.max_steps:
                    break
                losses = self.train_step(batch.to(self.device))
                elapsed = time.perf_counter() - started
                done = (self.step - start_step) * self.cfg.solver.batch_size
                losses["images_per_s"] = done / max(elapsed, 1e-9)
                report = StepReport(self.step, losses, elapsed, last=self.step >= self.max_steps)
                for hook in self.hooks:
                    hook.after_step(self, report)
                if report.last:
                    break
        finally:
            for hook in self.hooks:
                hook.after_train(self)
        if self.dist.main:
            save_checkpoint(self.model, self.output_dir / FINAL_MODEL_NAME, meta=self._meta())
        return {} if report is None else {**report.losses, **report.scores}

    def validate(self) -> dict[str, float]:
        """PQ / PQ_th / PQ_st / mIoU (percent) on the validation set (process 0), each image
        prepared as the Predictor prepares it (:mod:`.validation`)."""
        assert self.val_dataset is not None
        val = self.val_dataset
        count = len(val) if not self.cfg.run.eval_images else min(len(val), self.cfg.run.eval_images)
        self.model.eval()
        try:
            return evaluate_model(self.model, self.model_cfg, val, count, self.device)
        finally:
            self.model.train()

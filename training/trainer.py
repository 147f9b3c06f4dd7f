"""The training loop: SGD, warm-up + multi-step LR, AMP, gradient clipping, DDP, checkpoints.

One :class:`Trainer` serves one process; under ``torchrun`` each process trains on its shard
of every batch (:class:`torch.utils.data.DistributedSampler`) and DDP averages the gradients,
so the same command runs on this CPU (gloo) and on 8 GPUs or several machines (NCCL).
Process 0 alone logs, writes checkpoints and evaluates.

A step reads like the algorithm::

    targets = build_targets(batch)                 # Sec. 4.1, Eq. 8-10
    losses = panoptic_losses(model(images), targets)   # Eq. 11-18
    loss = total_loss(losses)                      # Eq. 19
    loss.backward(); clip; optimizer.step(); scheduler.step()

Checkpoints (``OUT/last.pt``, written atomically: temp file + rename) hold the model and its
config (so :func:`rt_panoptic_ros.load_model` reads them) plus the optimizer, scheduler,
gradient scaler, step, every RNG state and the training config; ``--resume`` continues from
``last.pt`` exactly where the run stopped (same batches, same augmentation, same weights).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from rt_panoptic_ros.config import SIZE_DIVISIBILITY, Config
from rt_panoptic_ros.errors import CheckpointError, ConfigError, DatasetError, RTPanopticError
from rt_panoptic_ros.image_io import read_panoptic_png
from rt_panoptic_ros.model import RTPanoNet
from rt_panoptic_ros.model.checkpoint import load_checkpoint, load_weights, save_checkpoint
from rt_panoptic_ros.panoptic import decode
from rt_panoptic_ros.panoptic.coco_format import to_coco_panoptic
from rt_panoptic_ros.panoptic.fusion import void_label
from rt_panoptic_ros.training.data import PanopticDataset, cityscapes_panoptic, coco_panoptic
from rt_panoptic_ros.training.data.panoptic_format import Segment
from rt_panoptic_ros.training.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    Sample,
    Transform,
    cityscapes_train_transforms,
    coco_train_transforms,
    resize,
)
from rt_panoptic_ros.training.evaluation import PanopticEvaluator
from rt_panoptic_ros.training.losses import LOSS_NAMES, panoptic_losses, total_loss
from rt_panoptic_ros.training.targets import IGNORE_LABEL, Instances, Targets, build_targets
from rt_panoptic_ros.training.train_config import TrainConfig, network

#: Marks a checkpoint written by this trainer (beside the model file format of checkpoint.py).
TRAINING_STATE_VERSION = 1
CHECKPOINT_NAME = "last.pt"


class TrainingError(RTPanopticError):
    """Training cannot go on (a non-finite loss, a bad resume)."""


# --------------------------------------------------------------------------------------- data


@dataclass
class Batch:
    """A padded batch.

    Attributes:
        images: ``[N, 3, H, W]`` uint8 RGB, H and W multiples of 128, zero padding.
        semantic: ``[N, H, W]`` int64 class ids, :data:`IGNORE_LABEL` on VOID and padding.
        image_sizes: ``[N, 2]`` int64 ``(H, W)`` of each image's content.
        instances: the batch's thing instances, masks on the padded grid.
    """

    images: Tensor
    semantic: Tensor
    image_sizes: Tensor
    instances: Instances

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.images.to(device, non_blocking=True), self.semantic.to(device, non_blocking=True),
            self.image_sizes.to(device), self.instances.to(device),
        )  # fmt: skip


def _round_up(value: int) -> int:
    return math.ceil(value / SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY


def collate(items: list[dict[str, Any]]) -> Batch:
    """Pad dataset items (``PanopticDataset[i]``) to one batch, sizes rounded up to 128."""
    heights = [item["image"].shape[1] for item in items]
    widths = [item["image"].shape[2] for item in items]
    h, w = _round_up(max(heights)), _round_up(max(widths))
    n = len(items)
    images = torch.zeros((n, 3, h, w), dtype=torch.uint8)
    semantic = torch.full((n, h, w), IGNORE_LABEL, dtype=torch.long)
    masks = []
    for i, item in enumerate(items):
        hi, wi = item["image"].shape[1:]
        images[i, :, :hi, :wi] = item["image"]
        semantic[i, :hi, :wi] = item["semantic"]
        masks.append(F.pad(item["masks"], (0, w - wi, 0, h - hi)))
    counts = torch.tensor([len(item["boxes"]) for item in items])
    instances = Instances(
        image=torch.repeat_interleave(torch.arange(n), counts),
        boxes=torch.cat([item["boxes"] for item in items]).float().reshape(-1, 4),
        masks=torch.cat(masks) if masks else torch.zeros((0, h, w), dtype=torch.bool),
        thing_classes=torch.cat([item["thing_classes"] for item in items]).long(),
        iscrowd=torch.cat([item["iscrowd"] for item in items]).bool(),
    )
    sizes = torch.tensor(list(zip(heights, widths, strict=True)), dtype=torch.long)
    return Batch(images, semantic, sizes, instances)


def build_dataset(cfg: TrainConfig, train: bool) -> PanopticDataset:
    """The training (augmented, seeded) or validation dataset the config names.

    Raises:
        DatasetError: the path does not exist or does not hold the expected files.
    """
    d = cfg.data
    root = Path(d.root if train else d.val_root)
    what = "data.root" if train else "data.val_root"
    if not str(root) or not root.exists():
        raise DatasetError(f"{what}: {root}: no such folder (rt-panoptic-synth OUT writes a synthetic one)")
    # Validation images stay as they are: evaluate() resizes them as the Predictor does.
    steps: list[Transform] = [Resize(*d.size)] if train and d.size != (0, 0) else []
    if train and d.augment == "cityscapes":
        steps.append(cityscapes_train_transforms(crop=d.crop))
    elif train and d.augment == "coco":
        steps.append(coco_train_transforms())
    elif train and d.augment == "flip":
        steps.append(RandomHorizontalFlip(0.5))
    transforms = Compose(steps) if steps else None
    seed = cfg.run.seed if train else None
    if d.format == "folder":
        json_file = root / "panoptic.json"
        if not json_file.is_file():
            raise DatasetError(f"{what}: {json_file}: no such file (expected rt-panoptic-synth's layout)")
        return PanopticDataset(
            json_file,
            root / "panoptic",
            root / "images",
            transforms=transforms,
            name=d.name or root.name,
            seed=seed,
        )
    split = d.split if train else d.val_split
    make = coco_panoptic if d.format == "coco" else cityscapes_panoptic
    named = {"name": d.name} if d.name else {}
    return make(root, split, transforms=transforms, seed=seed, **named)


class Resize(Transform):
    """Resize every sample to ``height x width`` (image bilinear, segments nearest)."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return resize(sample, self.height, self.width)

    def __repr__(self) -> str:
        return f"Resize({self.height}, {self.width})"


class ResumableSampler(Sampler[int]):
    """A :class:`DistributedSampler` epoch that can start part-way, for exact resumes.

    Epoch ``e`` is the permutation ``DistributedSampler(seed, e)`` gives this process; the
    first ``skip`` indices are left out (those the interrupted run already consumed).
    """

    def __init__(self, size: int, world: int, rank: int, seed: int):
        self.inner = DistributedSampler(
            range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip :])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


# ----------------------------------------------------------------------------------- schedule


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up from ``warmup_factor * lr`` over ``warmup_steps``, then ``x gamma`` at milestones."""

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


# ------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (world 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the ``torchrun`` process group (gloo on the CPU, NCCL on GPUs) when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# ------------------------------------------------------------------------------------ trainer


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
    torch.set_rng_state(states["torch"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def imagenet_state(cfg: Config) -> dict[str, Tensor] | None:
    """The backbone's ImageNet weights from torch's local cache, or ``None`` if not there.

    Never downloads: a training run on a machine without the file starts from random
    weights (and says so) instead of stalling on the network.
    """
    import torchvision

    if cfg.model.backbone_weights is None:
        return None
    try:
        weights = torchvision.models.get_model_weights(cfg.model.backbone)[cfg.model.backbone_weights]
    except KeyError:
        raise ConfigError(f"model.backbone_weights: {cfg.model.backbone_weights!r} is unknown") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def build_model(cfg: Config, use_imagenet: bool) -> tuple[RTPanoNet, str]:
    """The network with ``cfg.model.backbone_weights`` taken from the local cache when present.

    The returned model's config has ``backbone_weights = None``: checkpoints must never make
    :func:`rt_panoptic_ros.load_model` fetch ImageNet weights it overwrites anyway.

    Returns:
        The model and a line saying how the backbone was initialised.
    """
    state = imagenet_state(cfg) if use_imagenet else None
    plain = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone_weights=None))
    model = RTPanoNet(plain)
    if state is None:
        how = "backbone: random initialisation"
        if use_imagenet and cfg.model.backbone_weights:
            how += f" ({cfg.model.backbone} {cfg.model.backbone_weights} not in {torch.hub.get_dir()})"
        return model, how
    body = model.backbone.body
    own = body.state_dict()
    # MobileNet's body is `features`; the enum's keys carry that prefix.
    state = {k.removeprefix("features."): v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    body.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model, f"backbone: ImageNet {cfg.model.backbone_weights} ({len(own) - len(missing)} tensors)"


class Trainer:
    """Trains one model as :class:`TrainConfig` says, writing to ``output_dir``.

    Args:
        cfg: the training configuration.
        output_dir: checkpoints (``last.pt``, ``model_final.pt``), TensorBoard events, log.
        device: where this process trains (``cuda:<local_rank>`` under torchrun on GPUs).
        max_steps: stop after this step (the schedule still follows ``cfg.solver.steps``).
        progress: show a tqdm bar (process 0 only).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        output_dir: str | Path,
        device: torch.device | str = "cpu",
        max_steps: int | None = None,
        progress: bool | None = None,
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
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params, lr=solver.lr, momentum=solver.momentum, weight_decay=solver.weight_decay
        )
        self.scheduler = WarmupMultiStepLR(
            self.optimizer, solver.milestones, solver.gamma, solver.warmup_steps, solver.warmup_factor
        )
        self.amp = solver.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0
        self.sampler = ResumableSampler(len(self.dataset), self.dist.world, self.dist.rank, cfg.run.seed)
        self.steps_per_epoch = len(self.sampler) // self.batch_per_process
        self.last_checkpoint: Path | None = None

    # ------------------------------------------------------------------------- checkpoints

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / CHECKPOINT_NAME

    def save(self, path: Path | None = None) -> Path:
        """Write the full training state atomically (process 0 only).

        Raises:
            TrainingError: a weight is not finite; the previous checkpoint stays as it was.
        """
        path = path or self.checkpoint_path
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            kept = self.last_checkpoint or "none written yet"
            raise TrainingError(
                f"step {self.step}: non-finite weights; not saved, the last good checkpoint is {kept}"
            )
        save_checkpoint(
            self.model, path,
            meta={"source": "rt-panoptic-train", "step": self.step, "init": self.init_note},
            training={
                "version": TRAINING_STATE_VERSION,
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_states(),
                "config": self.cfg.to_dict(),
                "world": self.dist.world,
            },
        )  # fmt: skip
        self.last_checkpoint = path
        return path

    def resume(self, path: Path | None = None) -> None:
        """Continue from a checkpoint of this trainer.

        Raises:
            CheckpointError: missing, torn, foreign, or for a different network.
        """
        path = path or self.checkpoint_path
        data = load_checkpoint(path)  # missing / torn / foreign -> CheckpointError
        state = data.get("training")
        if not isinstance(state, dict) or state.get("version") != TRAINING_STATE_VERSION:
            raise CheckpointError(f"{path}: a model file without training state; cannot resume from it")
        load_weights(self.model, data["model"], source=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_states(state["rng"])
        self.step = int(state["step"])
        self.last_checkpoint = path

    # ---------------------------------------------------------------------------- the loop

    def batches(self) -> Iterator[Batch]:
        """Batches from step ``self.step`` on, epoch after epoch (exact on resume)."""
        epoch, done = divmod(self.step, self.steps_per_epoch)
        context = None
        if self.cfg.data.workers > 0:
            # Forked workers can hang in OpenCV's thread pool (training/README.md).
            context = "forkserver"
        while True:
            self.sampler.set_epoch(epoch, skip=done * self.batch_per_process)
            self.dataset.set_epoch(epoch)
            loader = DataLoader(
                self.dataset, batch_size=self.batch_per_process, sampler=self.sampler, drop_last=True,
                collate_fn=collate, num_workers=self.cfg.data.workers, multiprocessing_context=context,
                persistent_workers=False, pin_memory=self.device.type == "cuda",
            )  # fmt: skip
            yield from loader
            epoch, done = epoch + 1, 0

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step; returns the loss terms (averaged over processes) and the lr."""
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
            bad = [
                name
                for name, v in zip(("total", *LOSS_NAMES), values.tolist(), strict=True)
                if not math.isfinite(v)
            ]
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
        if self.dist.world > 1:
            dist.all_reduce(values)
            values /= self.dist.world
        report = dict(zip(("total", *LOSS_NAMES), values.tolist(), strict=True))
        report["lr"] = self.optimizer.param_groups[0]["lr"]
        return report

    def train(self) -> dict[str, float]:
        """Run until ``max_steps``; returns the last step's losses (and PQ when evaluated)."""
        from tqdm import tqdm

        main = self.dist.main
        writer = self._writer() if main else None
        bar = tqdm(
            total=self.max_steps, initial=self.step, desc="rt-panoptic-train", unit="step",
            disable=(not main) or (None if self.progress is None else not self.progress), dynamic_ncols=True,
        )  # fmt: skip
        report: dict[str, float] = {}
        started, start_step = time.perf_counter(), self.step
        try:
            for batch in self.batches():
                if self.step >= self.max_steps:
                    break
                report = self.train_step(batch.to(self.device))
                elapsed = time.perf_counter() - started
                images_per_s = (self.step - start_step) * self.cfg.solver.batch_size / max(elapsed, 1e-9)
                report["images_per_s"] = images_per_s
                bar.update(1)
                bar.set_postfix(loss=f"{report['total']:.3f}", img_s=f"{images_per_s:.2f}", refresh=False)
                log_now = self.step % self.cfg.run.log_every == 0 or self.step == 1
                if main and bar.disable and log_now:  # a log file instead of a terminal: one line
                    line = (
                        f"step {self.step}/{self.max_steps} loss {report['total']:.4f} lr {report['lr']:.5f}"
                    )
                    speed = f"{images_per_s:.2f} images/s, {elapsed:.1f} s"
                    print(f"{line} {speed}", file=sys.stderr, flush=True)
                if writer is not None and log_now:
                    for name, value in report.items():
                        writer.add_scalar(f"loss/{name}" if name in LOSS_NAMES or name == "total" else name,
                                          value, self.step)  # fmt: skip
                last = self.step >= self.max_steps
                if main and (last or self.step % self.cfg.run.checkpoint_every == 0):
                    self.save()
                if self.val_dataset is not None and (
                    last or (self.cfg.run.eval_every and self.step % self.cfg.run.eval_every == 0)
                ):
                    if main:
                        scores = self.evaluate()
                        report.update(scores)
                        if writer is not None:
                            for name, value in scores.items():
                                writer.add_scalar(f"eval/{name}", value, self.step)
                    if self.dist.world > 1:
                        dist.barrier()
                if last:
                    break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if main:
            meta = {"source": "rt-panoptic-train", "step": self.step, "init": self.init_note}
            save_checkpoint(self.model, self.output_dir / "model_final.pt", meta=meta)
        return report

    def _writer(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional at run time
            return None
        return SummaryWriter(str(self.output_dir / "tensorboard"))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """PQ / SQ / RQ / mIoU (percent) of the model on the validation set (process 0)."""
        assert self.val_dataset is not None
        val = self.val_dataset
        count = len(val) if not self.cfg.run.eval_images else min(len(val), self.cfg.run.eval_images)
        evaluator = PanopticEvaluator(val.categories)
        self.model.eval()
        try:
            void = void_label(self.model_cfg.dataset.num_classes)
            for index in range(count):
                image = val[index]["image"]
                original = tuple(image.shape[-2:])
                target = (self.model_cfg.input.height, self.model_cfg.input.width)
                if all(target) and target != original:  # as the Predictor: resize, decode, resize back
                    image = F.interpolate(
                        image[None].float(), size=target, mode="bilinear", align_corners=False
                    )
                    image = image[0].round_().clamp_(0, 255).to(torch.uint8)
                size = tuple(image.shape[-2:])
                padded = torch.zeros((1, 3, *(_round_up(s) for s in size)), dtype=torch.uint8)
                padded[0, :, : size[0], : size[1]] = image
                outputs = self.model(padded.to(self.device))
                result = decode(outputs, self.model_cfg, size, original)[0]
                pred_ids, pred_info = to_coco_panoptic(result, self.model_cfg, void)
                ann = val.annotations[index]
                gt_ids = read_panoptic_png(val.files(index)[1])
                pred_segments = [Segment(id=s["id"], category_id=s["category_id"]) for s in pred_info]
                evaluator.process(gt_ids, list(ann.segments), pred_ids, pred_segments)
        finally:
            self.model.train()
        results = evaluator.evaluate()
        return {
            "PQ": 100 * results["All"]["pq"], "PQ_th": 100 * results["Things"]["pq"],
            "PQ_st": 100 * results["Stuff"]["pq"], "mIoU": 100 * results["semantic"]["miou"],
        }  # fmt: skip

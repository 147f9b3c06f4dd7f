"""The training configuration: the network's config plus data, targets, losses, solver and run.

A YAML file (``config/training/*.yaml``) holds the sections::

    model / input / decoder    rt_panoptic_ros.config.Config parts (dataset meta comes from the data)
    data                       where the dataset is, its format, augmentation, loader workers
    targets                    Eq. 9 bounds, weakly supervised mode, semantic target stride
    loss                       λ, bootstrapping, focal constants, mask loss on/off
    solver                     SGD, warm-up, multi-step schedule, batch, clipping, AMP
    run                        seed, logging, checkpoint and evaluation periods

It is read with the package's one typed loader (:func:`rt_panoptic_ros.config.from_plain`), and
every field is a :func:`~rt_panoptic_ros.config.setting` (default, description, range written
once; ``docs/configuration.md`` lists them). ``key=value`` overrides on the command line
(``solver.lr=0.01``) are applied to the YAML's dictionary before it is checked, so they are
checked the same way. An unknown key is refused with its close matches
(``solver.lrr: unknown key; did you mean solver.lr?``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rt_panoptic_ros.config import (
    Config,
    DecoderConfig,
    InputConfig,
    ModelConfig,
    apply_overrides,
    from_plain,
    read_yaml,
    setting,
    setting_problems,
    to_plain,
)
from rt_panoptic_ros.errors import ConfigError
from rt_panoptic_ros.training.losses import LossConfig
from rt_panoptic_ros.training.targets import DEFAULT_LEVEL_BOUNDS


@dataclass(frozen=True)
class DataConfig:
    """Where the training and validation images are (layouts: training/README.md)."""

    name: str = setting(
        "",
        "the dataset name the model's config records (dataset.name); empty: the folder's name "
        "(folder) or coco_panoptic / cityscapes",
    )
    format: Literal["folder", "coco", "cityscapes"] = setting(
        "folder", "folder: rt-panoptic-synth's layout (panoptic.json, panoptic/, images/); coco; cityscapes"
    )
    root: str = setting("", "the training folder (folder) or the dataset root (coco, cityscapes)")
    split: str = setting("train", "the training split (coco, cityscapes)")
    val_root: str = setting("", "the validation folder or root; empty: no evaluation")
    val_split: str = setting("val", "the validation split (coco, cityscapes)")
    augment: Literal["cityscapes", "coco", "flip", "none"] = setting(
        "flip", "cityscapes / coco: the paper's augmentation (Sec. 5.1); flip; none"
    )
    crop: tuple[int, int] = setting((900, 1800), "(H, W) of the Cityscapes crop", low=1)
    size: tuple[int, int] = setting(
        (0, 0),
        "(H, W) every training image is resized to first (validation images are fitted into "
        "input.height x input.width as the Predictor does); (0, 0): kept as they are",
        low=0,
    )
    workers: int = setting(2, "DataLoader worker processes per training process (0: load in the loop)", low=0)


@dataclass(frozen=True)
class TargetConfig:
    """Target assignment (Sec. 4.1)."""

    level_bounds: tuple[float, ...] = setting(
        DEFAULT_LEVEL_BOUNDS, "m_1..m_4 of Eq. 9 in pixels, increasing (m_0 = 0, m_5 = inf)", low=0.0
    )
    weak: bool = setting(False, "weakly supervised mode (Sec. 5.6): foreground = inside a box, no mask loss")
    semantic_stride: Literal[1, 8] = setting(
        1,
        "1: the semantic loss at full resolution (logits upsampled); 8: at the logits' grid (labels sampled)",
    )


@dataclass(frozen=True)
class SolverConfig:
    """SGD with linear warm-up and a multi-step schedule (Sec. 5.3)."""

    batch_size: int = setting(8, "images per step over all processes (divided among them)", low=1)
    lr: float = setting(0.013, "base learning rate for batch_size", low=0.0, exclusive=True)
    momentum: float = setting(0.9, "SGD momentum", low=0.0, high=1.0)
    weight_decay: float = setting(1e-4, "L2 weight decay", low=0.0)
    steps: int = setting(48000, "total optimiser steps", low=1)
    milestones: tuple[int, ...] = setting(
        (36000, 44000), "steps at which the rate is multiplied by gamma", low=0
    )
    gamma: float = setting(0.1, "the rate's factor at each milestone", low=0.0, exclusive=True)
    warmup_steps: int = setting(500, "steps over which the rate ramps up linearly", low=0)
    warmup_factor: float = setting(1.0 / 3.0, "the ramp starts at warmup_factor x lr", low=0.0, high=1.0)
    clip_grad_norm: float = setting(10.0, "largest gradient norm (0: no clipping)", low=0.0)
    amp: bool = setting(True, "mixed precision on CUDA (ignored on the CPU)")


@dataclass(frozen=True)
class RunConfig:
    """Seeds and periods."""

    seed: int = setting(0, "seeds weights, sampling and augmentation", low=0)
    log_every: int = setting(20, "steps between log lines and TensorBoard scalars", low=1)
    checkpoint_every: int = setting(
        1000, "steps between checkpoints (the last step always writes one)", low=1
    )
    eval_every: int = setting(0, "steps between evaluations on data.val_root (0: only at the end)", low=0)
    eval_images: int = setting(0, "validation images per evaluation (0: all)", low=0)
    imagenet: bool = setting(
        True,
        "initialise the backbone from ImageNet weights when the file of model.backbone_weights is in "
        "torch's local cache (never downloads)",
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``network(meta)`` gives the model's :class:`Config`.

    Raises:
        ConfigError: a field out of its range, or network parts the model's config refuses.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        network(self, meta=None)  # the network parts pass the model config's own checks
        problems = [
            problem
            for name in ("data", "targets", "loss", "solver", "run")
            for problem in setting_problems(getattr(self, name), f"{name}.")
        ]
        bounds = list(self.targets.level_bounds)
        if len(bounds) != 4 or bounds != sorted(bounds):
            problems.append(f"targets.level_bounds: {bounds}, expected 4 increasing values (m_1..m_4)")
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read ``path`` (YAML), apply ``overrides``, check.

    Raises:
        ConfigError: one line for anything wrong: an unknown key (with its close matches), a
            wrong type, a value out of its range.
    """
    return from_plain(TrainConfig, apply_overrides(read_yaml(path), list(overrides or [])), str(path))


def network(cfg: TrainConfig, meta: Any) -> Config:
    """The model's :class:`Config`; ``meta`` (a ``DatasetMeta``) says what the outputs mean."""
    parts = {"model": cfg.model, "input": cfg.input, "decoder": cfg.decoder}
    if meta is not None:
        parts["dataset"] = meta
    return Config(**parts)

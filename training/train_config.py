"""The training configuration: the network's config plus data, targets, losses, solver and run.

A YAML file (``config/training/*.yaml``) holds the sections::

    model / input / decoder    rt_panoptic_ros.config.Config parts (dataset meta comes from the data)
    data                       where the dataset is, its format, augmentation, loader workers
    targets                    Eq. 9 bounds, weakly supervised mode, semantic target stride
    loss                       λ, bootstrapping, focal constants, mask loss on/off
    solver                     SGD, warm-up, multi-step schedule, batch, clipping, AMP
    run                        seed, logging, checkpoint and evaluation periods

``key=value`` overrides on the command line (``solver.lr=0.01``) are applied to the YAML's
dictionary before it is checked, so they are checked the same way. An unknown key is refused
with its close matches (``solver.lrr: unknown key; did you mean solver.lr?``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rt_panoptic_ros.config import Config, DecoderConfig, InputConfig, ModelConfig
from rt_panoptic_ros.errors import ConfigError
from rt_panoptic_ros.training.losses import LossConfig
from rt_panoptic_ros.training.targets import DEFAULT_LEVEL_BOUNDS


@dataclass(frozen=True)
class DataConfig:
    """Where the training and validation images are.

    Attributes:
        name: the dataset name the model's config records (``dataset.name``); empty: the
            folder's name (``folder``) or ``coco_panoptic`` / ``cityscapes``.
        format: ``"folder"`` (``rt-panoptic-synth`` layout: ``panoptic.json``, ``panoptic/``,
            ``images/``), ``"coco"`` or ``"cityscapes"`` (layouts of training/README.md).
        root: the training folder (``folder``) or the dataset root (``coco``, ``cityscapes``).
        split: the training split (``coco``, ``cityscapes``).
        val_root: the validation folder or root; empty: no periodic evaluation.
        val_split: the validation split (``coco``, ``cityscapes``).
        augment: ``"cityscapes"`` / ``"coco"`` (the paper's, Sec. 5.1), ``"flip"`` or ``"none"``.
        crop: ``(H, W)`` of the Cityscapes crop.
        size: ``(H, W)`` every training and validation image is resized to first (as the
            Predictor resizes to ``input.height x input.width``); ``(0, 0)``: kept as it is.
        workers: DataLoader worker processes per training process (0: load in the loop).
    """

    name: str = ""
    format: Literal["folder", "coco", "cityscapes"] = "folder"
    root: str = ""
    split: str = "train"
    val_root: str = ""
    val_split: str = "val"
    augment: Literal["cityscapes", "coco", "flip", "none"] = "flip"
    crop: tuple[int, int] = (900, 1800)
    size: tuple[int, int] = (0, 0)
    workers: int = 2


@dataclass(frozen=True)
class TargetConfig:
    """Target assignment (Sec. 4.1).

    Attributes:
        level_bounds: m_1..m_4 of Eq. 9 in pixels (m_0 = 0, m_5 = inf).
        weak: weakly supervised mode (Sec. 5.6): foreground = inside a box, no mask loss.
        semantic_stride: 1 = the semantic loss at full resolution (logits upsampled),
            8 = at the logits' own grid (labels sampled).
    """

    level_bounds: tuple[float, ...] = DEFAULT_LEVEL_BOUNDS
    weak: bool = False
    semantic_stride: Literal[1, 8] = 1


@dataclass(frozen=True)
class SolverConfig:
    """SGD with linear warm-up and a multi-step schedule (Sec. 5.3).

    Attributes:
        batch_size: images per step over all processes (divided among them).
        lr: base learning rate for ``batch_size``.
        steps: total optimiser steps.
        milestones: steps at which the rate is multiplied by ``gamma``.
        warmup_steps, warmup_factor: the rate ramps linearly from ``warmup_factor * lr``.
        clip_grad_norm: maximal gradient norm (0: no clipping).
        amp: mixed precision on CUDA (ignored on the CPU).
    """

    batch_size: int = 8
    lr: float = 0.013
    momentum: float = 0.9
    weight_decay: float = 1e-4
    steps: int = 48000
    milestones: tuple[int, ...] = (36000, 44000)
    gamma: float = 0.1
    warmup_steps: int = 500
    warmup_factor: float = 1.0 / 3.0
    clip_grad_norm: float = 10.0
    amp: bool = True


@dataclass(frozen=True)
class RunConfig:
    """Seeds and periods.

    Attributes:
        seed: seeds weights, sampling and augmentation.
        log_every: steps between TensorBoard scalars.
        checkpoint_every: steps between checkpoints (the last step always writes one).
        eval_every: steps between evaluations on ``data.val_root`` (0: only at the end).
        eval_images: validation images per evaluation (0: all).
        imagenet: initialise the backbone from ImageNet weights when the file of
            ``model.backbone_weights`` is in torch's local cache (never downloads).
    """

    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 1000
    eval_every: int = 0
    eval_images: int = 0
    imagenet: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``network(meta)`` gives the model's :class:`Config`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["solver.lr=0.01", ...]`` applied to a nested dict (values parsed as YAML)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected key=value (e.g. solver.lr=0.01)")
        value = _parse_value(text)
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node[leaf] = value
    return data


def _parse_value(text: str) -> Any:
    """A command-line value as YAML would read it, plus what YAML 1.1 leaves as strings
    (``1e-3``) as numbers; an empty value is the empty string."""
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_config(data: Any, source: str) -> TrainConfig:
    """Check and build a :class:`TrainConfig` from a (YAML) dictionary.

    Raises:
        ConfigError: an unknown key (with close matches), a wrong type, an invalid value.
    """
    cfg = _build(TrainConfig, data, "", source)
    # The network parts must also pass the package's own checks (group sizes, ...).
    network(cfg, meta=None)
    if cfg.solver.batch_size < 1 or cfg.solver.steps < 1:
        raise ConfigError(f"{source}: solver.batch_size and solver.steps must be >= 1")
    if len(cfg.targets.level_bounds) != 4 or list(cfg.targets.level_bounds) != sorted(
        cfg.targets.level_bounds
    ):
        raise ConfigError(f"{source}: targets.level_bounds: expected 4 increasing values (m_1..m_4)")
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read ``path`` (YAML), apply ``overrides``, check; one :class:`ConfigError` if anything is wrong."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return parse_config(apply_overrides(data, list(overrides or [])), str(path))


def network(cfg: TrainConfig, meta: Any) -> Config:
    """The model's :class:`Config`; ``meta`` (a ``DatasetMeta``) says what the outputs mean."""
    parts = {"model": cfg.model, "input": cfg.input, "decoder": cfg.decoder}
    if meta is not None:
        parts["dataset"] = meta
    try:
        return Config(**parts)
    except ConfigError as error:
        raise ConfigError(f"training config: {error}") from None


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: expected a mapping")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            full = [prefix + n for n in names]
            close = [prefix + n for n in difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)]
            hint = (
                f"; did you mean {' or '.join(close)}?" if close else f"; expected one of {', '.join(full)}"
            )
            raise ConfigError(f"{source}: {prefix}{key}: unknown key{hint}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _value(hints[name], value, f"{prefix}{name}", source) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def _value(hint: Any, value: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", source)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _value(next(a for a in args if a is not type(None)), value, key, source)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key}: {value!r}, expected one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"{source}: {key}: expected {len(item_types)} values, got {len(value)}")
        return tuple(
            _value(t, v, f"{key}[{i}]", source)
            for i, (t, v) in enumerate(zip(item_types, value, strict=True))
        )
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: {key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")

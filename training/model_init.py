"""The network a training run starts from: random, or its backbone from ImageNet weights that
are already in torch's local cache (never downloaded: a machine without the file starts from
random weights, and says so, instead of stalling on the network)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import Tensor

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import ConfigError
from rt_panoptic_ros.model import RTPanoNet


def imagenet_state(cfg: Config) -> dict[str, Tensor] | None:
    """The backbone's ImageNet weights from torch's local cache, or ``None`` if not there."""
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

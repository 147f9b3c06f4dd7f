"""Backbones with a P3-P7 feature pyramid (paper Sec. 4.2, as RetinaNet / FCOS).

A torchvision ResNet or MobileNetV3 with frozen BatchNorm gives C3, C4, C5 (strides 8, 16,
32); torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork` turns them into P3-P5 and
:class:`~torchvision.ops.feature_pyramid_network.LastLevelP6P7` adds P6, P7 (strides 64,
128) from P5. The module layout (``body`` / ``fpn``) is torchvision's
:class:`~torchvision.models.detection.backbone_utils.BackboneWithFPN`, which is also the
layout of the public TRI checkpoint, so its backbone keys load unchanged.
"""

from __future__ import annotations

from functools import partial

import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from rt_panoptic_ros.config import BACKBONES, FPN_STRIDES, ModelConfig
from rt_panoptic_ros.errors import ConfigError

# Strides of the backbone stages that feed the FPN (C3, C4, C5).
_BACKBONE_STRIDES = FPN_STRIDES[:3]


def build_backbone(cfg: ModelConfig) -> BackboneWithFPN:
    """Build ``cfg.backbone`` with frozen BatchNorm and a P3-P7 FPN of ``cfg.fpn_channels``.

    ImageNet weights are loaded when ``cfg.backbone_weights`` names a member of the
    backbone's torchvision weight enum (e.g. ``"IMAGENET1K_V1"``; torchvision downloads it
    or takes it from ``$TORCH_HOME``).

    Returns:
        A module mapping a float image ``[N, 3, H, W]`` to an ``OrderedDict`` of five
        ``[N, fpn_channels, H / s, W / s]`` maps for s = 8, 16, 32, 64, 128.
    """
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone: {cfg.backbone!r} is not one of {', '.join(BACKBONES)}")
    weights = None
    if cfg.backbone_weights is not None:
        enum = torchvision.models.get_model_weights(cfg.backbone)
        try:
            weights = enum[cfg.backbone_weights]
        except KeyError:
            members = ", ".join(m.name for m in enum)
            raise ConfigError(
                f"model.backbone_weights: {cfg.backbone_weights!r} is not one of {members}"
            ) from None
    extra_blocks = LastLevelP6P7(cfg.fpn_channels, cfg.fpn_channels)  # P6 from P5, as TRI
    if cfg.backbone.startswith("resnet"):
        body = torchvision.models.get_model(cfg.backbone, weights=weights, norm_layer=FrozenBatchNorm2d)
        # Stage k (1..4) of a ResNet has stride 2^(k+1); layer2..4 give C3..C5.
        stage_modules = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
        return_layers = {"layer2": "0", "layer3": "1", "layer4": "2"}
        c3_channels = body.inplanes // 4  # inplanes ends as C5's channel count
        in_channels = [c3_channels, 2 * c3_channels, 4 * c3_channels]
    else:
        # torchvision trained MobileNetV3's BatchNorm with eps=0.001; keep it when frozen.
        mobilenet = torchvision.models.get_model(
            cfg.backbone, weights=weights, norm_layer=partial(FrozenBatchNorm2d, eps=0.001)
        )
        body = mobilenet.features
        last_blocks = _last_block_per_stride(body, (2, 4, *_BACKBONE_STRIDES))
        first_blocks = [0] + [index + 1 for index in last_blocks[:-1]]
        stage_modules = [
            [str(i) for i in range(first, last + 1)]
            for first, last in zip(first_blocks, last_blocks, strict=True)
        ]
        return_layers = {str(index): str(k) for k, index in enumerate(last_blocks[2:])}
        in_channels = [_out_channels(body[index]) for index in last_blocks[2:]]
    _freeze_stages(body, stage_modules, cfg.trainable_backbone_layers)
    return BackboneWithFPN(body, return_layers, in_channels, cfg.fpn_channels, extra_blocks=extra_blocks)


def _out_channels(block: nn.Module) -> int:
    """Output channels of a feature block: those of its last convolution."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _last_block_per_stride(features: nn.Sequential, strides: tuple[int, ...]) -> list[int]:
    """Index of the last block of ``features`` whose output has each stride.

    Found by running a small zero image through the blocks once, which is exact for any
    torchvision MobileNet variant and needs no hand-kept index table.
    """
    size = 4 * max(strides)
    x = torch.zeros(1, 3, size, size)
    last: dict[int, int] = {}
    with torch.no_grad():
        for index, block in enumerate(features):
            x = block(x)
            last[size // x.shape[-1]] = index
    missing = [s for s in strides if s not in last]
    if missing:
        raise ConfigError(f"model.backbone: no feature map at stride(s) {missing}")
    return [last[s] for s in strides]


def _freeze_stages(body: nn.Module, stage_modules: list[list[str]], trainable: int) -> None:
    """Freeze all but the last ``trainable`` of the five stages (torchvision's convention).

    Args:
        stage_modules: for each stage (strides 2, 4, 8, 16, 32), the names of its child
            modules in ``body``.
    """
    frozen = {name for stage in stage_modules[: len(stage_modules) - trainable] for name in stage}
    for name, parameter in body.named_parameters():
        if name.split(".", 1)[0] in frozen:
            parameter.requires_grad_(False)

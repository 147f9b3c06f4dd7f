"""The unified panoptic head (paper Sec. 4.2, Fig. 2).

Two towers are shared across the FPN levels P3..P7:

- the *semantic tower* feeds the per-level box classification and, upsampled to stride 8 and
  concatenated over levels, the global semantic segmentation logits;
- the *localisation tower* feeds the per-level box regression (``exp(scale_i * conv)``,
  l, t, r, b distances) and centerness and, upsampled to stride 4 and concatenated, the
  global levelness logits (which FPN level's box each pixel belongs to, 0 = none).

Each tower is ``depth`` x (3x3 conv + GroupNorm + ReLU).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from rt_panoptic_ros.config import FPN_STRIDES, ModelConfig

#: Box regression is ``exp(min(scale * conv, log(MAX_BOX_SIDE)))``: the clamp keeps exp finite.
MAX_BOX_SIDE = 10000.0


class HeadOutputs(NamedTuple):
    """Raw outputs of :class:`PanopticHead` for a batch of N images of size H x W.

    Levels are ordered by stride 8, 16, 32, 64, 128; ``h_i, w_i = H / s_i, W / s_i``.
    ``C`` is the number of semantic classes, ``C_th`` of thing classes, ``L = 5`` levels.

    Attributes:
        semantic_logits: ``[N, C, H/8, W/8]`` semantic segmentation logits.
        levelness_logits: ``[N, L+1, H/4, W/4]``; channel 0 = background, i+1 = level i.
        box_cls: L x ``[N, C_th, h_i, w_i]`` box classification logits.
        box_reg: L x ``[N, 4, h_i, w_i]`` l, t, r, b distances in input pixels (> 0).
        centerness: L x ``[N, 1, h_i, w_i]`` centerness logits.
    """

    semantic_logits: Tensor
    levelness_logits: Tensor
    box_cls: list[Tensor]
    box_reg: list[Tensor]
    centerness: list[Tensor]


def build_tower(in_channels: int, channels: int, depth: int, group_size: int) -> nn.Sequential:
    """``depth`` x (3x3 conv + GroupNorm(channels / group_size) + ReLU).

    Shapes: ``[N, in_channels, h, w] -> [N, channels, h, w]``.
    """
    blocks = []
    for k in range(depth):
        blocks.append(
            Conv2dNormActivation(
                in_channels if k == 0 else channels,
                channels,
                kernel_size=3,
                norm_layer=lambda c: nn.GroupNorm(c // group_size, c),
                bias=True,  # the conv keeps its bias before GroupNorm, as FCOS and TRI
            )
        )
    return nn.Sequential(*blocks)


class BoxRegression(nn.Module):
    """Per-level box regression: ``exp(scale_i * conv(x))``, clamped, in input pixels.

    One learned scalar per level (FCOS) lets the shared conv serve every stride.
    """

    def __init__(self, in_channels: int, num_levels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.scales = nn.Parameter(torch.ones(num_levels))

    def forward(self, x: Tensor, level: int) -> Tensor:
        """``[N, C, h, w] -> [N, 4, h, w]`` l, t, r, b distances."""
        return torch.exp((self.scales[level] * self.conv(x)).clamp(max=math.log(MAX_BOX_SIDE)))


class DenseMapPredictor(nn.Module):
    """A global map from all levels' tower features: upsample, concatenate, 3x3 conv.

    Used twice: semantic logits from the semantic tower at stride 8 and levelness logits
    from the localisation tower at stride 4 (paper Sec. 4.2).
    """

    def __init__(self, tower_channels: int, num_levels: int, out_channels: int, upscale: int):
        super().__init__()
        self.upscale = upscale  # output size = upscale x the finest level's size
        self.conv = nn.Conv2d(tower_channels * num_levels, out_channels, kernel_size=3, padding=1)

    def forward(self, towers: list[Tensor]) -> Tensor:
        """L x ``[N, T, h_i, w_i]`` -> ``[N, out, upscale * h_0, upscale * w_0]``."""
        h, w = towers[0].shape[-2:]
        size = (h * self.upscale, w * self.upscale)
        # Upsample to the target's actual size (not by a factor), bilinear as the original.
        upsampled = [F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in towers]
        return self.conv(torch.cat(upsampled, dim=1))


class PanopticHead(nn.Module):
    """The unified panoptic head: two shared towers and five predictors.

    Args:
        cfg: widths and depths of the towers.
        num_classes: C, semantic classes (stuff and things).
        num_thing_classes: C_th, box classes.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, num_thing_classes: int) -> None:
        super().__init__()
        levels = len(FPN_STRIDES)
        sem, loc = cfg.semantic_channels, cfg.localization_channels
        self.semantic_tower = build_tower(cfg.fpn_channels, sem, cfg.tower_convs, cfg.group_norm_group_size)
        self.localization_tower = build_tower(
            cfg.fpn_channels, loc, cfg.tower_convs, cfg.group_norm_group_size
        )
        self.box_cls = nn.Conv2d(sem, num_thing_classes, kernel_size=3, padding=1)
        self.box_reg = BoxRegression(loc, levels)
        self.centerness = nn.Conv2d(loc, 1, kernel_size=3, padding=1)
        self.semantic = DenseMapPredictor(sem, levels, num_classes, upscale=1)
        self.levelness = DenseMapPredictor(loc, levels, levels + 1, upscale=2)
        self._init_weights(cfg.prior_probability)

    def _init_weights(self, prior_probability: float) -> None:
        # FCOS/TRI initialisation: N(0, 0.01) convs, zero bias, and the box-class bias set so
        # that every location starts at `prior_probability` (stable focal loss at step 0).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0.0)
        bias = -math.log((1.0 - prior_probability) / prior_probability)
        nn.init.constant_(self.box_cls.bias, bias)

    def forward(self, features: list[Tensor]) -> HeadOutputs:
        """L x ``[N, fpn_channels, h_i, w_i]`` (P3..P7) -> :class:`HeadOutputs`."""
        semantic_towers = [self.semantic_tower(f) for f in features]  # L x [N, sem, h_i, w_i]
        localization_towers = [self.localization_tower(f) for f in features]  # L x [N, loc, h_i, w_i]
        return HeadOutputs(
            semantic_logits=self.semantic(semantic_towers),  # [N, C, H/8, W/8]
            levelness_logits=self.levelness(localization_towers),  # [N, L+1, H/4, W/4]
            box_cls=[self.box_cls(t) for t in semantic_towers],
            box_reg=[self.box_reg(t, level) for level, t in enumerate(localization_towers)],
            centerness=[self.centerness(t) for t in localization_towers],
        )

"""Fold the backbone's frozen BatchNorm into the convolutions before it, for inference.

A :class:`~torchvision.ops.misc.FrozenBatchNorm2d` after a convolution is a fixed per-channel
affine map, ``y = x * scale + shift``, so it can live in the convolution's weight and bias
instead. Two reasons to do so at inference:

* Its buffers are float32: under CUDA fp16 autocast every FrozenBN takes an fp16 activation
  and returns float32, so the next convolution casts it back and the memory traffic of fp16 is
  lost after every convolution of the backbone. Folded, the activations stay fp16.
* In an ONNX graph each one is a Mul and an Add more, and per-channel int8 weight scales then
  miss the BN scale; folded, the quantiser sees the weight that is actually applied.
"""

from __future__ import annotations

import copy
import itertools
import re

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

from rt_panoptic_ros.model.network import RTPanoNet

# torchvision's ResNet names a block's convolutions conv1..conv3 and the BatchNorm on each
# one's output bn1..bn3 (also the stem's conv1 / bn1, a child of the IntermediateLayerGetter).
_CONV_NAME = re.compile(r"conv(\d+)")


def fold_frozen_batchnorm(network: RTPanoNet) -> RTPanoNet:
    """A copy of ``network`` in eval mode with every frozen BatchNorm folded into its convolution.

    Every ``Conv2d`` whose output goes straight into a ``FrozenBatchNorm2d`` gets the weight
    ``w * s[:, None, None, None]`` and the bias ``(b - mean) * s + beta`` with
    ``s = gamma / sqrt(var + eps)`` (per output channel, shapes ``[C_out, C_in / groups, k, k]``
    and ``[C_out]``), and the BatchNorm becomes ``nn.Identity()``. The copy computes the same
    function as ``network``: ``uint8 [N, 3, H, W] -> HeadOutputs`` of the same shapes and
    dtypes, equal up to float rounding (the folded parameters are computed in float64 and
    rounded once to the network's dtype). ``network`` itself is left as it was (mode, device,
    modules); a network with no frozen BatchNorm (already folded) is copied unchanged.

    The pairs are found structurally: consecutive children of an ``nn.Sequential`` (torchvision
    ``Conv2dNormActivation`` = [Conv2d, FrozenBN, activation] in MobileNet, ResNet's
    ``downsample`` = [Conv2d, FrozenBN]) and the children ``convK`` / ``bnK`` of one module
    (torchvision's ResNet blocks and stem).

    Raises:
        ValueError: a ``FrozenBatchNorm2d`` is left that follows no convolution in one of these
            layouts (a new backbone layout): it is named, rather than left silently unfolded.
    """
    folded = copy.deepcopy(network).eval()
    for parent in list(folded.modules()):  # a list: the loop replaces children
        for conv_name, bn_name in _conv_bn_pairs(parent):
            conv, bn = parent.get_submodule(conv_name), parent.get_submodule(bn_name)
            if conv.out_channels != bn.weight.numel():
                continue  # not the BN of this convolution's output: leave it to the check below
            _fold_into(conv, bn)
            setattr(parent, bn_name, nn.Identity())
    left = [name for name, m in folded.named_modules() if isinstance(m, FrozenBatchNorm2d)]
    if left:
        raise ValueError(
            f"fold_frozen_batchnorm: {len(left)} FrozenBatchNorm2d not directly after a Conv2d in a "
            f"known layout (Sequential or convK/bnK), e.g. {left[0]!r}: extend the pairing rule"
        )
    return folded


def _conv_bn_pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """Names of (Conv2d, FrozenBatchNorm2d) children of ``parent`` where the BN reads the conv's output."""
    children = dict(parent.named_children())
    if isinstance(parent, nn.Sequential):
        # A Sequential runs its children in order: each feeds the next.
        pairs = list(itertools.pairwise(children))
    else:
        pairs = [(n, f"bn{m[1]}") for n in children if (m := _CONV_NAME.fullmatch(n))]
    return [
        (c, b)
        for c, b in pairs
        if isinstance(children.get(c), nn.Conv2d) and isinstance(children.get(b), FrozenBatchNorm2d)
    ]


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> None:
    """Give ``conv`` the weight and bias of ``bn(conv(x))`` (``conv`` changed in place)."""
    dtype = conv.weight.dtype
    # float64 for the arithmetic, so the only error left is one rounding to ``dtype``.
    weight, bias = fuse_conv_bn_weights(
        conv.weight.double(),
        None if conv.bias is None else conv.bias.double(),
        bn.running_mean.double(),
        bn.running_var.double(),
        bn.eps,
        bn.weight.double(),
        bn.bias.double(),
    )
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)

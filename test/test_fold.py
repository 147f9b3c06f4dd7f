"""Folding the backbone's frozen BatchNorm into its convolutions: same outputs, fewer ops, the
caller's network untouched (that fp16 activations stay fp16 on CUDA: test_gpu.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_batchnorm_stats, tiny_config
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rt_panoptic_ros.model import HeadOutputs, RTPanoNet, fold_frozen_batchnorm
from rt_panoptic_ros.runtime.backends import TorchBackend

BACKBONES = ["resnet18", "mobilenet_v3_large"]

# float32, folded vs unfolded: both compute the same function; they differ by one rounding of
# each folded weight (float32 eps 1.2e-7) and by where the per-channel scale is applied
# (inside vs after the convolution's sum), through ~20 convolutions and the head's GroupNorm.
# Measured: <= 3e-6 of the output's scale (resnet18 and mobilenet_v3_large); 1e-4 leaves a 30x
# margin, while one BN left out moves the outputs by 1.4-2x their scale. The tolerance is
# relative to each output's largest magnitude, as the logits (~1) and box_reg (exp, pixels)
# live on different scales.
FP32_TOL = 1e-4


def model(backbone: str) -> RTPanoNet:
    return random_batchnorm_stats(RTPanoNet(tiny_config(backbone)).eval())


def image(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, 128, 256), dtype=torch.uint8, generator=g)


def fields(out: HeadOutputs) -> dict[str, torch.Tensor]:
    """``HeadOutputs`` as named float32 tensors on the CPU (per-level lists numbered)."""
    named = {}
    for name, value in out._asdict().items():
        for i, t in enumerate(value if isinstance(value, list) else [value]):
            named[f"{name}[{i}]" if isinstance(value, list) else name] = t.float().cpu()
    return named


def assert_outputs_close(actual: HeadOutputs, expected: HeadOutputs, tol: float) -> None:
    """Each field within ``tol`` relative and ``tol`` x (its largest |value|) absolute."""
    a, e = fields(actual), fields(expected)
    assert a.keys() == e.keys()
    for name in e:
        scale = e[name].abs().max().item()
        torch.testing.assert_close(
            a[name], e[name], rtol=tol, atol=tol * scale, msg=lambda m, n=name: f"{n}: {m}"
        )


def frozen_norms(net: nn.Module) -> list[str]:
    return [name for name, m in net.named_modules() if isinstance(m, FrozenBatchNorm2d)]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_folded_network_computes_the_same_outputs(backbone):
    net = model(backbone)
    folded = fold_frozen_batchnorm(net)
    x = image()
    with torch.no_grad():
        assert_outputs_close(folded(x), net(x), FP32_TOL)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_no_frozen_batchnorm_left_and_the_original_untouched(backbone):
    net = model(backbone)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    norms = frozen_norms(net)
    x = image()
    with torch.no_grad():
        expected = net(x)
        folded = fold_frozen_batchnorm(net)
        again = net(x)

    assert frozen_norms(folded) == []
    assert not folded.training
    # Every BN became an Identity, one per folded convolution.
    assert len(norms) == sum(isinstance(folded.get_submodule(n), nn.Identity) for n in norms)
    assert frozen_norms(net) == norms
    state = net.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], v) for k, v in before.items())
    for name, tensor in fields(expected).items():
        assert torch.equal(fields(again)[name], tensor), name
    # Folding a folded network changes nothing.
    with torch.no_grad():
        twice = fold_frozen_batchnorm(folded)(x)
        once = folded(x)
    for name, tensor in fields(once).items():
        assert torch.equal(fields(twice)[name], tensor), name


def test_a_batchnorm_in_an_unknown_layout_is_named():
    net = RTPanoNet(tiny_config())
    net.normalizer = nn.Sequential(net.normalizer, FrozenBatchNorm2d(3))  # follows no convolution
    with pytest.raises(ValueError, match=r"FrozenBatchNorm2d .*'normalizer\.1'"):
        fold_frozen_batchnorm(net)


def test_torch_backend_runs_the_folded_copy():
    net = model("resnet18")
    backend = TorchBackend(net, torch.device("cpu"))
    assert backend.model is not net
    assert frozen_norms(backend.model) == [] and frozen_norms(net)
    x = image()
    with torch.no_grad():
        assert_outputs_close(backend(x), net(x), FP32_TOL)

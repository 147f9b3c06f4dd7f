"""RTPanoNet: output shapes for every backbone and preset, frozen BatchNorm, input checks."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from torchvision.ops.misc import FrozenBatchNorm2d

from rt_panoptic_ros.config import BACKBONES, FPN_STRIDES, PRESETS, preset
from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.model import HeadOutputs, RTPanoNet


def assert_head_shapes(out: HeadOutputs, cfg, n: int, h: int, w: int) -> None:
    classes, things = cfg.dataset.num_classes, cfg.dataset.num_thing_classes
    assert out.semantic_logits.shape == (n, classes, h // 8, w // 8)
    assert out.levelness_logits.shape == (n, len(FPN_STRIDES) + 1, h // 4, w // 4)
    for name in ("box_cls", "box_reg", "centerness"):
        assert len(getattr(out, name)) == len(FPN_STRIDES)
    for level, stride in enumerate(FPN_STRIDES):
        assert out.box_cls[level].shape == (n, things, h // stride, w // stride)
        assert out.box_reg[level].shape == (n, 4, h // stride, w // stride)
        assert out.centerness[level].shape == (n, 1, h // stride, w // stride)
        assert (out.box_reg[level] > 0).all()  # exp(.) distances


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_gives_contract_shapes(backbone):
    cfg = tiny_config(backbone)
    net = RTPanoNet(cfg).eval()
    with torch.no_grad():
        out = net(torch.randint(0, 256, (2, 3, 128, 256), dtype=torch.uint8))
    assert_head_shapes(out, cfg, 2, 128, 256)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_gives_contract_shapes(name):
    cfg = preset(name)
    net = RTPanoNet(cfg).eval()
    with torch.no_grad():
        out = net(torch.randint(0, 256, (1, 3, 256, 384), dtype=torch.uint8))
    assert_head_shapes(out, cfg, 1, 256, 384)


def test_head_outputs_built_by_keyword():
    t = torch.zeros(1)
    out = HeadOutputs(semantic_logits=t, levelness_logits=t, box_cls=[t], box_reg=[t], centerness=[t])
    assert out.box_cls == [t]


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_backbone_batchnorm_is_frozen(backbone):
    net = RTPanoNet(tiny_config(backbone))
    norms = [m for m in net.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms, "expected frozen BatchNorm in the backbone"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_trainable_backbone_layers():
    import dataclasses

    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, trainable_backbone_layers=2))
    net = RTPanoNet(cfg)
    trainable = {n.split(".")[0] for n, p in net.backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}
    assert all(p.requires_grad for p in net.head.parameters())


def test_normalisation_is_inside_the_network():
    """BGR models see the channels reversed: feeding BGR-ordered pixels to an RGB twin matches."""
    import dataclasses

    cfg = tiny_config()
    bgr = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, channel_order="bgr"))
    rgb = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, channel_order="rgb"))
    net_bgr, net_rgb = RTPanoNet(bgr).eval(), RTPanoNet(rgb).eval()
    net_rgb.load_state_dict(net_bgr.state_dict())
    image = torch.randint(0, 256, (1, 3, 128, 128), dtype=torch.uint8)
    with torch.no_grad():
        a = net_bgr(image).semantic_logits
        b = net_rgb(image.flip(1)).semantic_logits
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(1, 3, 128, 128), "expected dtype uint8"),
        (torch.zeros(3, 128, 128, dtype=torch.uint8), r"expected shape \[N, 3, H, W\], got \[3, 128, 128\]"),
        (torch.zeros(1, 4, 128, 128, dtype=torch.uint8), r"got \[1, 4, 128, 128\]"),
        (torch.zeros(1, 3, 100, 128, dtype=torch.uint8), "multiples of 128, got 100x128"),
        (torch.zeros(1, 3, 0, 128, dtype=torch.uint8), "multiples of 128, got 0x128"),
        ([[1, 2, 3]], "expected a torch.Tensor, got list"),
    ],
)
def test_bad_input_is_one_clear_error(images, message):
    net = RTPanoNet(tiny_config()).eval()
    with pytest.raises(InputError, match=message):
        net(images)

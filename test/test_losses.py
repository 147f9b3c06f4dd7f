"""The losses of Eq. 11-19: minimal for perfect predictions, finite gradients, ignore label,
bootstrapping, and each term named."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rt_panoptic_ros.config import FPN_STRIDES, DecoderConfig
from rt_panoptic_ros.model import HeadOutputs
from rt_panoptic_ros.panoptic.boxes import locations
from rt_panoptic_ros.training.losses import (
    LOSS_NAMES,
    LossConfig,
    bootstrapped_cross_entropy,
    iou_loss,
    mask_loss,
    panoptic_losses,
    total_loss,
)
from rt_panoptic_ros.training.targets import IGNORE_LABEL, Instances, build_targets

H, W = 128, 256
LEVEL_SIZES = [(H // s, W // s) for s in FPN_STRIDES]
NUM_CLASSES, THINGS = 4, (2, 3)  # two stuff, two thing classes
BIG = 30.0  # a logit this large is a certain prediction


def scene():
    """Two separate rectangular instances on a stuff background, one image."""
    rects, classes = [(40, 32, 88, 96), (150, 40, 200, 72)], [0, 1]
    masks = torch.zeros((2, H, W), dtype=torch.bool)
    semantic = torch.zeros((1, H, W), dtype=torch.long)
    semantic[:, 64:] = 1
    for k, (x1, y1, x2, y2) in enumerate(rects):
        masks[k, y1:y2, x1:x2] = True
        semantic[0, y1:y2, x1:x2] = THINGS[classes[k]]
    instances = Instances(
        image=torch.zeros(2, dtype=torch.long),
        boxes=torch.tensor(rects, dtype=torch.float32),
        masks=masks,
        thing_classes=torch.tensor(classes),
        iscrowd=torch.zeros(2, dtype=torch.bool),
    )
    sizes = torch.tensor([[H, W]])
    return instances, semantic, sizes, build_targets(instances, semantic, sizes, LEVEL_SIZES)


def perfect_outputs(instances, semantic, targets) -> HeadOutputs:
    """Head outputs that say exactly what the targets say.

    Every location of every level regresses its distances to the box of the instance its
    pixel belongs to (or the first box where none): linear in the position, so the bilinear
    reads of the dense box map (Eq. 14) are exact too.
    """
    t = targets.levels
    n = 1
    box_cls, box_reg, centerness = [], [], []
    start = 0
    owner = t.instance.clone()  # [1, P]
    for (h, w), stride in zip(LEVEL_SIZES, FPN_STRIDES, strict=True):
        stop = start + h * w
        labels = t.labels[0, start:stop]
        cls = torch.full((len(labels), 2), -BIG)
        cls[labels >= 0, labels[labels >= 0]] = BIG
        box_cls.append(cls.T.reshape(n, 2, h, w))
        pts = locations(h, w, stride, torch.device("cpu"))
        # Each level regresses towards the instance whose pixels it covers at stride 4 (exact
        # for bilinear reads): nearest instance by box centre.
        centres = (instances.boxes[:, :2] + instances.boxes[:, 2:]) / 2
        nearest = torch.cdist(pts, centres).argmin(dim=1)
        which = torch.where(owner[0, start:stop] >= 0, owner[0, start:stop], nearest)
        boxes = instances.boxes[which]
        ltrb = torch.cat((pts - boxes[:, :2], boxes[:, 2:] - pts), dim=1)
        box_reg.append(ltrb.T.reshape(n, 4, h, w))
        c = t.centerness[0, start:stop].clamp(1e-6, 1 - 1e-6)
        centerness.append(torch.log(c / (1 - c)).reshape(n, 1, h, w))
        start = stop
    levelness = F.one_hot(targets.levelness.clamp(max=len(FPN_STRIDES)), len(FPN_STRIDES) + 1)
    semantic_logits = F.one_hot(semantic.clamp(max=NUM_CLASSES - 1), NUM_CLASSES)
    return HeadOutputs(
        semantic_logits=(semantic_logits.permute(0, 3, 1, 2).float() * 2 - 1) * BIG,
        levelness_logits=(levelness.permute(0, 3, 1, 2).float() * 2 - 1) * BIG,
        box_cls=box_cls,
        box_reg=box_reg,
        centerness=centerness,
    )


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def test_perfect_predictions_give_minimal_losses():
    instances, semantic, sizes, targets = scene()
    outputs = perfect_outputs(instances, semantic, targets)
    decoder = DecoderConfig(pre_nms_thresh=0.5)
    losses = panoptic_losses(outputs, targets, sizes, LossConfig(), decoder)
    assert tuple(losses) == LOSS_NAMES
    fg = targets.levels.foreground
    assert fg.sum() > 10
    for name in ("box_reg", "box_cls", "levelness", "semantic", "mask"):
        assert losses[name].item() == pytest.approx(0.0, abs=1e-4), name
    # BCE against soft targets bottoms out at the targets' entropy (its gradient is then 0).
    entropy = binary_entropy(targets.levels.centerness[fg]).sum() / fg.sum()
    assert losses["centerness"].item() == pytest.approx(entropy.item(), rel=1e-4)


def test_mask_loss_counts_false_positives_and_negatives():
    instances, semantic, sizes, targets = scene()
    outputs = perfect_outputs(instances, semantic, targets)
    decoder = DecoderConfig(pre_nms_thresh=0.5)
    assert mask_loss(outputs, targets, sizes, decoder).item() == pytest.approx(0.0, abs=1e-5)
    # Make the levelness claim a box on background cells: they now add false positives.
    levelness = outputs.levelness_logits.clone()
    levelness[:, 0, :, :] = -BIG
    levelness[:, 1, :, :] = BIG
    worse = outputs._replace(levelness_logits=levelness)
    assert mask_loss(worse, targets, sizes, decoder).item() > 0.05
    # Shrunk boxes everywhere: in-mask IoU < 1 gives false negatives.
    shrunk = outputs._replace(box_reg=[r * 0.5 for r in outputs.box_reg])
    assert mask_loss(shrunk, targets, sizes, decoder).item() > 0.05


def test_gradients_are_finite_for_random_outputs():
    _, _, sizes, targets = scene()
    torch.manual_seed(0)
    outputs = HeadOutputs(
        semantic_logits=torch.randn(1, NUM_CLASSES, H // 8, W // 8, requires_grad=True),
        levelness_logits=torch.randn(1, 6, H // 4, W // 4, requires_grad=True),
        box_cls=[torch.randn(1, 2, h, w, requires_grad=True) for h, w in LEVEL_SIZES],
        box_reg=[torch.rand(1, 4, h, w).mul(60).add(1).requires_grad_() for h, w in LEVEL_SIZES],
        centerness=[torch.randn(1, 1, h, w, requires_grad=True) for h, w in LEVEL_SIZES],
    )
    decoder = DecoderConfig(pre_nms_thresh=0.3)
    losses = panoptic_losses(outputs, targets, sizes, LossConfig(), decoder)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    total_loss(losses, LossConfig()).backward()
    leaves = [outputs.semantic_logits, outputs.levelness_logits, *outputs.box_cls, *outputs.centerness]
    for tensor in leaves:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()


def test_losses_are_finite_without_any_instance():
    semantic = torch.zeros((1, H, W), dtype=torch.long)
    empty = Instances(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0, H, W, dtype=torch.bool),
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool),
    )  # fmt: skip
    sizes = torch.tensor([[H, W]])
    targets = build_targets(empty, semantic, sizes, LEVEL_SIZES)
    outputs = HeadOutputs(
        torch.zeros(1, NUM_CLASSES, H // 8, W // 8, requires_grad=True),
        torch.zeros(1, 6, H // 4, W // 4, requires_grad=True),
        [torch.zeros(1, 2, h, w, requires_grad=True) for h, w in LEVEL_SIZES],
        [torch.ones(1, 4, h, w, requires_grad=True) for h, w in LEVEL_SIZES],
        [torch.zeros(1, 1, h, w, requires_grad=True) for h, w in LEVEL_SIZES],
    )
    losses = panoptic_losses(outputs, targets, sizes, LossConfig(), DecoderConfig())
    assert losses["box_reg"] == 0 and losses["centerness"] == 0 and losses["mask"] == 0
    assert losses["box_cls"] > 0  # every location is a negative, normalised by max(1, 0)
    total_loss(losses, LossConfig()).backward()


def test_iou_loss_is_zero_only_for_the_same_box():
    target = torch.tensor([[10.0, 5.0, 20.0, 15.0]])
    assert iou_loss(target, target).item() == 0.0
    half = torch.tensor([[5.0, 5.0, 10.0, 15.0]])  # half the width: I = 300, U = 600
    assert iou_loss(half, target).item() == pytest.approx(-math.log(301 / 601))


def test_semantic_loss_ignores_the_ignore_label():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 8, 8)
    labels = torch.randint(0, 3, (1, 8, 8))
    labels[:, :4] = IGNORE_LABEL
    base = bootstrapped_cross_entropy(logits, labels, 0.3)
    changed = logits.clone()
    changed[:, :, :4] = torch.randn(1, 3, 4, 8) * 100  # anything on ignored pixels
    assert bootstrapped_cross_entropy(changed, labels, 0.3).item() == pytest.approx(base.item())


def test_bootstrapping_keeps_the_worst_30_percent():
    torch.manual_seed(2)
    logits = torch.randn(2, 5, 10, 10)
    labels = torch.randint(0, 5, (2, 10, 10))
    labels[0, 0] = IGNORE_LABEL  # 10 ignored, 190 labelled -> the worst 57
    per_pixel = F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL, reduction="none")
    valid = per_pixel[labels != IGNORE_LABEL]
    expected = valid.sort(descending=True).values[:57].mean()
    assert bootstrapped_cross_entropy(logits, labels, 0.3).item() == pytest.approx(expected.item())
    assert bootstrapped_cross_entropy(logits, labels, 1.0).item() == pytest.approx(valid.mean().item())
    # Logits at a coarser stride are upsampled to the labels.
    assert torch.isfinite(bootstrapped_cross_entropy(logits[..., :5, :5], labels, 0.3))


def test_total_weights_the_semantic_term_by_lambda():
    losses = {name: torch.tensor(1.0) for name in LOSS_NAMES}
    assert total_loss(losses, LossConfig(semantic_weight=1.0)).item() == 6.0
    assert total_loss(losses, LossConfig(semantic_weight=0.4)).item() == pytest.approx(5.4)

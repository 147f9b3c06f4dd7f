"""Targets on hand-made instances (paper Sec. 4.1, Eq. 8-10; weak mode Sec. 5.6)."""

from __future__ import annotations

import math

import pytest
import torch

from rt_panoptic_ros.config import FPN_STRIDES
from rt_panoptic_ros.training.targets import (
    IGNORE_LABEL,
    Instances,
    build_targets,
    level_of,
    regression_targets,
)

H, W = 128, 256
LEVEL_SIZES = [(H // s, W // s) for s in FPN_STRIDES]
OFFSETS = [0]
for h, w in LEVEL_SIZES:
    OFFSETS.append(OFFSETS[-1] + h * w)


def make_instances(rects, images=None, classes=None, crowd=None, masks=None, num_images=1) -> Instances:
    """Rectangular instances ``(x1, y1, x2, y2)`` (their masks fill their boxes unless given)."""
    k = len(rects)
    boxes = torch.tensor(rects, dtype=torch.float32).reshape(k, 4)
    if masks is None:
        masks = torch.zeros((k, H, W), dtype=torch.bool)
        for i, (x1, y1, x2, y2) in enumerate(rects):
            masks[i, y1:y2, x1:x2] = True
    return Instances(
        image=torch.tensor(images or [0] * k, dtype=torch.long),
        boxes=boxes,
        masks=masks,
        thing_classes=torch.tensor(classes or [0] * k, dtype=torch.long),
        iscrowd=torch.tensor(crowd or [False] * k),
    )


def targets_of(instances, num_images=1, semantic=None, sizes=None, **kwargs):
    semantic = torch.zeros((num_images, H, W), dtype=torch.long) if semantic is None else semantic
    sizes = torch.tensor([[H, W]] * num_images) if sizes is None else sizes
    return build_targets(instances, semantic, sizes, LEVEL_SIZES, **kwargs)


def index(level: int, x: int, y: int) -> int:
    """Flat location index of cell (x, y) of level ``level``."""
    return OFFSETS[level] + y * LEVEL_SIZES[level][1] + x


def test_ltrb_centerness_and_class_at_a_location():
    # One person-sized box; location (x=1, y=3) of P3 sits at pixel (12, 28).
    t = targets_of(make_instances([(10, 20, 40, 60)], classes=[2])).levels
    p = index(0, 1, 3)
    assert t.points[p].tolist() == [12.0, 28.0]
    assert t.labels[0, p] == 2
    assert t.ltrb[0, p].tolist() == [2.0, 8.0, 28.0, 32.0]  # Eq. 8
    assert t.centerness[0, p].item() == pytest.approx(math.sqrt(2 / 28 * 8 / 32))  # Eq. 10
    assert t.labels[0, index(0, 5, 3)] == -1  # pixel (44, 28): outside
    # Foreground on P3 = exactly the P3 locations whose pixel is in the mask.
    fg = t.labels[0, : OFFSETS[1]].view(LEVEL_SIZES[0]) >= 0
    ys, xs = fg.nonzero().unbind(1)
    assert set(zip(xs.tolist(), ys.tolist(), strict=True)) == {
        (x, y) for x in (1, 2, 3, 4) for y in (2, 3, 4, 5, 6)
    }
    assert int(t.foreground.sum()) == 20  # and nowhere else on other levels


def test_level_choice_follows_the_bounds():
    ltrb = torch.tensor(
        [[1.0, 1.0, 64.0, 1.0], [64.5, 0, 0, 0], [128.0, 0, 0, 0], [300, 0, 0, 0], [1e4, 0, 0, 0]]
    )
    assert level_of(ltrb, (64.0, 128.0, 256.0, 512.0)).tolist() == [0, 1, 1, 3, 4]
    # A box larger than m_2 = 64 regresses on P5 near its centre, not on P3 or P4.
    t = targets_of(make_instances([(60, 20, 196, 120)]), level_bounds=(32.0, 64.0, 128.0, 256.0)).levels
    p3, p4, p5 = index(0, 16, 8), index(1, 8, 4), index(2, 4, 2)  # pixels (132, 68), (136, 72), (144, 80)
    assert t.ltrb[0, p4].tolist() == [76.0, 52.0, 60.0, 48.0]
    assert t.labels[0, p3] == -1 and t.labels[0, p4] == -1
    assert t.labels[0, p5] == 0 and t.ltrb[0, p5].amax() == 84.0
    assert not t.foreground[0, : OFFSETS[2]].any()  # max(l, t, r, b) >= 64 everywhere in this box


def test_levelness_map_is_the_level_plus_one_inside_masks():
    inst = make_instances([(8, 8, 40, 40), (100, 16, 250, 120)], classes=[0, 1])
    t = targets_of(inst, level_bounds=(32.0, 64.0, 128.0, 256.0))
    lv = t.levelness[0]  # [32, 64]
    assert lv.shape == (H // 4, W // 4)
    assert lv[0, 0] == 0  # background
    assert lv[5, 5] == 1  # pixel (22, 22) of the small box: max distance 18 <= 32 -> P3
    # Large box: cell (x=44, y=17) -> pixel (178, 70); max(l,t,r,b) = 78 -> level 3 (P5) -> 3
    assert lv[17, 44] == 3
    assert (lv[2:10, 2:10] == 1).all()  # every cell of the small box
    assert (
        t.mask_instance[0, 5, 5] == 0 and t.mask_instance[0, 17, 44] == 1 and t.mask_instance[0, 0, 0] == -1
    )


def test_mask_not_box_decides_foreground_and_weak_mode_uses_boxes():
    # An L-shaped mask: its box covers pixels the mask does not.
    masks = torch.zeros((2, H, W), dtype=torch.bool)
    masks[0, 16:64, 16:32] = True
    masks[0, 48:64, 16:64] = True
    masks[1, 30:40, 40:56] = True  # small instance inside the first one's box
    inst = make_instances([(16, 16, 64, 64), (40, 30, 56, 40)], classes=[0, 1], masks=masks)
    p = index(0, 5, 4)  # pixel (44, 36): in both boxes, in the second mask only
    q = index(0, 6, 3)  # pixel (52, 28): in the first box only, in no mask
    strong = targets_of(inst).levels
    weak = targets_of(inst, weak=True).levels
    assert strong.labels[0, p] == 1 and strong.labels[0, q] == -1
    assert weak.labels[0, p] == 1  # smallest box wins
    assert weak.labels[0, q] == 0 and weak.ltrb[0, q].tolist() == [36.0, 12.0, 12.0, 36.0]


def test_crowd_and_padding_are_ignored_and_images_do_not_mix():
    inst = make_instances([(0, 0, 64, 64), (0, 0, 64, 64)], images=[0, 1], crowd=[True, False])
    sizes = torch.tensor([[H, W], [H, 128]])  # image 1 is padded on the right
    t = targets_of(inst, num_images=2, sizes=sizes)
    p = index(0, 2, 2)  # pixel (20, 20)
    assert t.levels.labels[0, p] == -2  # crowd: neither class
    assert t.levels.labels[1, p] == 0
    assert t.levels.instance[1, p] == 1  # image 1's own instance, not image 0's
    assert t.levelness[0, 5, 5] == IGNORE_LABEL and t.levelness[1, 5, 5] == 1
    assert t.levels.labels[1, index(0, 20, 2)] == -2  # pixel (164, 20): padding of image 1
    assert (t.levelness[1, :, 32:] == IGNORE_LABEL).all() and (t.levelness[0, :, 32:] == 0).all()


def test_semantic_targets_full_or_stride_8():
    semantic = torch.arange(H * W).remainder(7).view(1, H, W)
    full = targets_of(make_instances([]), semantic=semantic).semantic
    assert torch.equal(full, semantic)
    coarse = targets_of(make_instances([]), semantic=semantic, semantic_stride=8).semantic
    assert coarse.shape == (1, H // 8, W // 8)
    assert coarse[0, 2, 3] == semantic[0, 4 + 16, 4 + 24]  # the label at the location's pixel


def test_regression_targets_broadcast_and_are_on_the_device_of_their_inputs():
    ltrb, centerness = regression_targets(torch.tensor([[5.0, 5.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert ltrb.tolist() == [[5.0, 5.0, 5.0, 5.0]] and centerness.tolist() == [1.0]

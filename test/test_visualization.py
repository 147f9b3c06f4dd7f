"""Overlays for people: fixed class colours, instances told apart, readable labels."""

from __future__ import annotations

import numpy as np

from rt_panoptic_ros.panoptic import VOID, Segment
from rt_panoptic_ros.visualization import class_palette, draw_overlay, panoptic_colors


def scene():
    semantic = np.zeros((60, 80), np.uint8)  # road
    semantic[:20] = VOID
    semantic[30:50, 10:30] = 13  # car 1
    semantic[30:50, 40:60] = 13  # car 2
    instance = np.zeros((60, 80), np.int16)
    instance[30:50, 10:30] = 1
    instance[30:50, 40:60] = 2
    segments = [
        Segment(id=1, category_id=13, score=0.9, bbox=(10.0, 30.0, 30.0, 50.0), area=400),
        Segment(id=2, category_id=13, score=0.8, bbox=(40.0, 30.0, 60.0, 50.0), area=400),
    ]
    return semantic, instance, segments


def test_palette_is_fixed_and_distinct():
    palette = class_palette(19)
    assert palette.shape == (19, 3) and palette.dtype == np.uint8
    assert tuple(palette[13]) == (0, 0, 142)  # Cityscapes' car
    big = class_palette(200)
    assert np.array_equal(big[:19], palette) and np.array_equal(big, class_palette(200))
    assert len({tuple(c) for c in big}) > 190


def test_instances_of_one_class_differ_and_void_is_unlabelled():
    semantic, instance, segments = scene()
    colours, labelled = panoptic_colors(semantic, instance, segments, class_palette(19))
    assert not labelled[:20].any() and labelled[20:].all()
    assert tuple(colours[40, 20]) != tuple(colours[40, 50])
    assert tuple(colours[55, 5]) == tuple(class_palette(19)[0])  # road keeps its class colour


def test_overlay_blends_and_draws_labels():
    semantic, instance, segments = scene()
    image = np.full((60, 80, 3), 100, np.uint8)
    names = [f"class{k}" for k in range(19)]
    plain = draw_overlay(image, semantic, instance, segments, names, alpha=0.0, boxes=False, labels=False)
    assert np.array_equal(plain, image)
    out = draw_overlay(image, semantic, instance, segments, names, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[:5], image[:5]), "void rows stay the image"
    assert (out.min(axis=2) > 200).sum() > 10, "white label text is drawn"
    assert (out.max(axis=2) == 0).sum() > 10, "on a dark label box"

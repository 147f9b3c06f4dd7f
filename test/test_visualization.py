"""Overlays for people: fixed class colours, instances told apart, readable labels.

``reference_overlay`` is the overlay as it was before the combined-id rewrite (kept verbatim
as the look to match; ``benchmarks/overlay.py`` times it against the new one).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np
import pytest
import torch

from rt_panoptic_ros import visualization
from rt_panoptic_ros.panoptic import VOID, InstanceSegment
from rt_panoptic_ros.visualization import class_palette, draw_overlay, host_blend, panoptic_colors

NAMES = [f"class{k}" for k in range(19)]
THING_CLASSES = range(11, 19)  # Cityscapes' person .. bicycle


def scene():
    semantic = np.zeros((60, 80), np.uint8)  # road
    semantic[:20] = VOID
    semantic[30:50, 10:30] = 13  # car 1
    semantic[30:50, 40:60] = 13  # car 2
    instance = np.zeros((60, 80), np.int16)
    instance[30:50, 10:30] = 1
    instance[30:50, 40:60] = 2
    segments = [
        InstanceSegment(id=1, category_id=13, score=0.9, bbox=(10.0, 30.0, 30.0, 50.0), area=400),
        InstanceSegment(id=2, category_id=13, score=0.8, bbox=(40.0, 30.0, 60.0, 50.0), area=400),
    ]
    return semantic, instance, segments


def busy_scene(
    height: int, width: int, num_instances: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[InstanceSegment]]:
    """A noisy image, 60 random stuff rectangles, a void band on top (partly under instances),
    and ``num_instances`` overlapping thing rectangles drawn far to near.

    Returns:
        rgb ``[H, W, 3]`` uint8, semantic ``[H, W]`` uint8 (255 = void), instance ``[H, W]``
        int16, and the segments ordered by id with tight boxes.
    """
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    semantic = np.zeros((height, width), np.uint8)
    for _ in range(60):
        y, x = rng.integers(0, height), rng.integers(0, width)
        h, w = rng.integers(4, height // 2), rng.integers(4, width // 2)
        semantic[y : y + h, x : x + w] = rng.integers(0, THING_CLASSES[0])
    instance = np.zeros((height, width), np.int16)
    categories = rng.choice(THING_CLASSES, num_instances)
    for k in range(num_instances, 0, -1):  # id 1 (best score) in front
        y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
        h, w = rng.integers(3, max(4, height // 4)), rng.integers(3, max(4, width // 6))
        instance[y : y + h, x : x + w] = k
        semantic[y : y + h, x : x + w] = categories[k - 1]
    semantic[: height // 12] = VOID
    segments = []
    for k in range(1, num_instances + 1):
        ys, xs = np.nonzero(instance == k)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0)
        score = float(rng.uniform(0.3, 1.0))
        segments.append(InstanceSegment(id=k, category_id=int(categories[k - 1]), score=score,
                                        bbox=tuple(float(v) for v in box), area=len(xs)))  # fmt: skip
    return rgb, semantic, instance, segments


def agreement(a: np.ndarray, b: np.ndarray, levels: int) -> float:
    """Fraction of pixels whose channels all differ by at most ``levels``."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return float((np.abs(a.astype(np.int16) - b).max(axis=2) <= levels).mean())


# --- the overlay before the rewrite (per-instance mask assignment), the look to keep ----------

_REF_BASE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip
_REF_GOLDEN = 0.618033988749895


def _reference_palette(num_classes: int) -> np.ndarray:
    extra = [
        np.array(colorsys.hsv_to_rgb((k * _REF_GOLDEN) % 1.0, 0.65, 0.95)) * 255
        for k in range(max(0, num_classes - len(_REF_BASE)))
    ]
    colours = np.concatenate([_REF_BASE, np.array(extra, dtype=np.uint8).reshape(-1, 3)])
    return colours[:num_classes]


def _reference_colors(semantic, instance, segments, palette):
    num_classes = len(palette)
    if semantic.dtype == np.uint8:
        lut = np.zeros((256, 1, 3), np.uint8)
        lut[: min(num_classes, 256), 0] = palette[:256]
        colours = cv2.LUT(cv2.merge([semantic, semantic, semantic]), lut)
    else:
        lut = np.zeros((max(int(semantic.max(initial=0)) + 1, num_classes), 3), np.uint8)
        lut[:num_classes] = palette
        colours = lut[semantic]
    if segments:
        shade = 0.55 + 0.45 * ((np.arange(1, len(segments) + 1) * _REF_GOLDEN) % 1.0)
        base = palette[[min(s.category_id, num_classes - 1) for s in segments]].astype(np.float32)
        instance_lut = np.zeros((len(segments) + 1, 3), np.uint8)
        instance_lut[1:] = np.clip(base * shade[:, None] + (1 - shade[:, None]) * 40, 0, 255)
        in_instance = (instance > 0) & (instance <= len(segments))
        colours[in_instance] = instance_lut[instance[in_instance]]
    labelled = semantic < num_classes
    return colours, labelled


def reference_overlay(
    image: np.ndarray,
    semantic: np.ndarray,
    instance: np.ndarray,
    segments: Sequence[InstanceSegment],
    class_names: Sequence[str],
    alpha: float = 0.5,
    boxes: bool = True,
    labels: bool = True,
) -> np.ndarray:
    """``draw_overlay`` before the rewrite, unchanged."""
    palette = _reference_palette(len(class_names))
    colours, labelled = _reference_colors(semantic, instance, segments, palette)
    out = cv2.addWeighted(np.ascontiguousarray(image), 1.0 - alpha, colours, alpha, 0.0)
    cv2.copyTo(image, (~labelled).view(np.uint8), out)
    scale = max(0.4, min(image.shape[:2]) / 900)
    thickness = max(1, round(scale * 2))
    for s in segments:
        x1, y1, x2, y2 = (round(v) for v in s.bbox)
        colour = tuple(int(c) for c in palette[min(s.category_id, len(palette) - 1)])
        if boxes:
            cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness)
        if labels:
            name = class_names[s.category_id] if s.category_id < len(class_names) else str(s.category_id)
            _reference_label(out, f"{name} {s.score:.2f}", (x1, y1), scale, thickness)
    return out


def _reference_label(image, text, corner, scale, thickness):
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = min(max(corner[0], 0), max(0, image.shape[1] - w - 2))
    y = max(corner[1], h + baseline + 2)
    cv2.rectangle(image, (x, y - h - baseline - 2), (x + w + 2, y), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x + 1, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)  # fmt: skip


# --- tests ------------------------------------------------------------------------------------


def test_palette_is_fixed_and_distinct():
    palette = class_palette(19)
    assert palette.shape == (19, 3) and palette.dtype == np.uint8
    assert tuple(palette[13]) == (0, 0, 142)  # Cityscapes' car
    big = class_palette(200)
    assert np.array_equal(big[:19], palette) and np.array_equal(big, class_palette(200))
    assert np.array_equal(big, _reference_palette(200))
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
    plain = draw_overlay(image, semantic, instance, segments, NAMES, alpha=0.0, boxes=False, labels=False)
    assert np.array_equal(plain, image)
    out = draw_overlay(image, semantic, instance, segments, NAMES, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[:5], image[:5]), "void rows stay the image"
    assert (out.min(axis=2) > 200).sum() > 10, "white label text is drawn"
    assert (out.max(axis=2) == 0).sum() > 10, "on a dark label box"


@pytest.mark.parametrize("alpha", [0.5, 0.3, 1.0])
@pytest.mark.parametrize("num_instances", [0, 3, 30])
def test_same_look_as_before(num_instances, alpha):
    rgb, semantic, instance, segments = busy_scene(240, 320, num_instances, seed=num_instances)
    new = draw_overlay(rgb, semantic, instance, segments, NAMES, alpha)
    old = reference_overlay(rgb, semantic, instance, segments, NAMES, alpha)
    assert agreement(new, old, levels=2) >= 0.995
    assert np.array_equal(new, old), "same colours, same blend: the very same pixels"


def test_same_look_with_wide_ids():
    """Ids that do not fit in a byte (int32 classes, or more instances than 255 - classes)."""
    rgb, semantic, instance, segments = busy_scene(120, 160, 250, seed=1)
    expected = reference_overlay(rgb, semantic, instance, segments, NAMES)
    assert np.array_equal(draw_overlay(rgb, semantic, instance, segments, NAMES), expected)
    wide = np.where(semantic == VOID, 65535, semantic).astype(np.int32)
    few = [s for s in segments if s.id <= 5]
    expected = reference_overlay(rgb, wide, instance, few, NAMES)
    assert np.array_equal(draw_overlay(rgb, wide, instance, few, NAMES), expected)


def test_odd_pixel_count_and_unknown_class_ids():
    rgb, semantic, instance, segments = busy_scene(61, 83, 4, seed=2)
    semantic[-3:] = 40  # unknown class: unlabelled like void
    instance[-3:, :10] = 2
    expected = reference_overlay(rgb, semantic, instance, segments, NAMES)
    assert np.array_equal(draw_overlay(rgb, semantic, instance, segments, NAMES), expected)


def test_two_bands_of_rows_paint_the_same_picture(monkeypatch):
    """Large pictures are painted in two bands of rows on two threads: here every picture is,
    odd sizes, wide ids and shrunk pictures included, and each is the one-pass picture."""
    cases = [
        busy_scene(61, 83, 4, seed=2),
        busy_scene(120, 160, 250, seed=1),
        busy_scene(97, 130, 30, seed=6),
    ]
    expected = [
        [draw_overlay(rgb, sem, ins, segs, NAMES, scale=scale) for scale in (1.0, 0.5, 0.37)]
        for rgb, sem, ins, segs in cases
    ]
    monkeypatch.setattr(host_blend, "BANDED_PIXELS", 1)
    for (rgb, semantic, instance, segments), pictures in zip(cases, expected, strict=True):
        assert np.array_equal(pictures[0], reference_overlay(rgb, semantic, instance, segments, NAMES))
        for scale, picture in zip((1.0, 0.5, 0.37), pictures, strict=True):
            assert np.array_equal(
                draw_overlay(rgb, semantic, instance, segments, NAMES, scale=scale), picture
            )


def test_empty_scene():
    rgb, semantic, instance, _ = busy_scene(48, 64, 0, seed=3)
    void = np.full_like(semantic, VOID)
    assert np.array_equal(draw_overlay(rgb, void, np.zeros_like(instance), [], NAMES), rgb)
    out = draw_overlay(rgb, semantic, np.zeros_like(instance), [], NAMES, scale=0.5)
    assert out.shape == (24, 32, 3)


def test_thirty_instances_are_told_apart_and_boxed():
    rgb, semantic, instance, segments = busy_scene(240, 320, 30, seed=4)
    colours, labelled = panoptic_colors(semantic, instance, segments, class_palette(19))
    seen = {}
    for s in segments:
        if s.area:
            ys, xs = np.nonzero((instance == s.id) & labelled)
            if len(ys):
                seen[s.id] = tuple(colours[ys[0], xs[0]])
    same_class = [(a, b) for a in seen for b in seen if a < b and
                  segments[a - 1].category_id == segments[b - 1].category_id]  # fmt: skip
    assert same_class and all(seen[a] != seen[b] for a, b in same_class)
    plain = draw_overlay(rgb, semantic, instance, segments, NAMES, boxes=False, labels=False)
    boxed = draw_overlay(rgb, semantic, instance, segments, NAMES, labels=False)
    for s in segments:
        if s.area:
            x1, y1 = int(s.bbox[0]), int(s.bbox[1])
            assert tuple(boxed[y1, x1]) == tuple(int(c) for c in class_palette(19)[s.category_id])
    assert not np.array_equal(plain, boxed)


def test_torch_tensors_give_the_numpy_image(monkeypatch):
    rgb, semantic, instance, segments = busy_scene(240, 320, 30, seed=5)
    sem_t, ins_t = torch.from_numpy(semantic), torch.from_numpy(instance)
    wide_t = torch.from_numpy(np.where(semantic == VOID, 65535, semantic).astype(np.int32))
    for scale in (1.0, 0.5):  # CPU tensors: the numpy path, without a copy
        expected = draw_overlay(rgb, semantic, instance, segments, NAMES, scale=scale)
        assert np.array_equal(draw_overlay(rgb, sem_t, ins_t, segments, NAMES, scale=scale), expected)
    # The device path of CUDA tensors, run here on CPU tensors: the very same bytes.
    monkeypatch.setattr(visualization, "_on_accelerator", lambda ids: isinstance(ids, torch.Tensor))
    for scale in (1.0, 0.5, 0.37):
        for alpha in (0.5, 0.3):
            expected = draw_overlay(rgb, semantic, instance, segments, NAMES, alpha, scale=scale)
            device = draw_overlay(rgb, sem_t, ins_t, segments, NAMES, alpha, scale=scale)
            assert device.dtype == np.uint8 and device.shape == expected.shape
            assert np.array_equal(device, expected), (scale, alpha)
    expected = draw_overlay(rgb, semantic, instance, segments, NAMES)
    assert np.array_equal(draw_overlay(rgb, wide_t, ins_t.int(), segments, NAMES), expected)
    expected = draw_overlay(rgb, semantic, instance, [], NAMES)
    assert np.array_equal(draw_overlay(rgb, sem_t, ins_t, [], NAMES), expected)


def test_scale_gives_the_rounded_size():
    semantic, instance, segments = scene()  # 60 x 80
    image = np.full((60, 80, 3), 100, np.uint8)
    for scale, size in ((0.5, (30, 40)), (0.33, (20, 26)), (0.125, (8, 10)), (0.001, (1, 1))):
        out = draw_overlay(image, semantic, instance, segments, NAMES, scale=scale)
        assert out.shape == (*size, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("scale", [0.5, 0.3])
def test_scale_draws_a_smaller_picture_of_the_same_look(scale):
    rgb, semantic, instance, segments = busy_scene(481, 642, 30, seed=6)
    size = (round(481 * scale), round(642 * scale))
    small = draw_overlay(rgb, semantic, instance, segments, NAMES, scale=scale)
    assert small.shape == (*size, 3) and small.dtype == np.uint8
    # Colours: as the full picture shrunk with INTER_AREA, but for the edges between ids.
    full = draw_overlay(rgb, semantic, instance, segments, NAMES, boxes=False, labels=False)
    plain = draw_overlay(rgb, semantic, instance, segments, NAMES, boxes=False, labels=False, scale=scale)
    assert agreement(plain, cv2.resize(full, size[::-1], interpolation=cv2.INTER_AREA), levels=8) >= 0.9


def test_scaled_boxes_and_labels_sit_where_the_shrunk_ones_do():
    """Above the 0.4 floor of the font scale (images over 360 pixels high), text and boxes
    shrink with the picture; thin strokes differ (crisp here, averaged in the shrunk one)."""
    rgb, semantic, instance, segments = busy_scene(960, 1280, 30, seed=7)
    small = draw_overlay(rgb, semantic, instance, segments, NAMES, scale=0.5)
    full = draw_overlay(rgb, semantic, instance, segments, NAMES)
    shrunk = cv2.resize(full, (640, 480), interpolation=cv2.INTER_AREA)
    assert agreement(small, shrunk, levels=32) >= 0.85
    for a, b in ((small, shrunk), (shrunk, small)):  # dark label boxes within a pixel of each other
        near_a = cv2.dilate((a.max(axis=2) < 40).view(np.uint8), np.ones((3, 3), np.uint8)) > 0
        dark_b = b.max(axis=2) < 40
        assert (near_a & dark_b).sum() >= 0.85 * dark_b.sum()


def test_scale_out_of_range_and_size_mismatch_raise():
    semantic, instance, segments = scene()
    image = np.zeros((60, 80, 3), np.uint8)
    for scale in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="scale"):
            draw_overlay(image, semantic, instance, segments, NAMES, scale=scale)
    with pytest.raises(ValueError, match="size"):
        draw_overlay(image, semantic[:50], instance[:50], segments, NAMES)

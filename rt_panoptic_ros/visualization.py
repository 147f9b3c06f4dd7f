"""Colours for people: panoptic overlays shared by ``rt-panoptic-infer`` and the node.

Robots read the id images; these pictures are for humans (RViz, reports). Every class has a
fixed colour, instances of one class are told apart by shade, and labels are white on a dark
box so they stay readable on any background. numpy + OpenCV, no torch, no ROS.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

from rt_panoptic_ros.panoptic.result import Segment

# The Cityscapes palette for the first 19 classes (familiar to anyone who has seen the
# benchmark), then golden-ratio hues for any further class.
_BASE_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip
_GOLDEN = 0.618033988749895


def class_palette(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 RGB, the same colours for the same class ids every time."""
    extra = [
        np.array(colorsys.hsv_to_rgb((k * _GOLDEN) % 1.0, 0.65, 0.95)) * 255
        for k in range(max(0, num_classes - len(_BASE_PALETTE)))
    ]
    colours = np.concatenate([_BASE_PALETTE, np.array(extra, dtype=np.uint8).reshape(-1, 3)])
    return colours[:num_classes]


def panoptic_colors(
    semantic: np.ndarray, instance: np.ndarray, segments: Sequence[Segment], palette: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Colour image of a panoptic result and the mask of its labelled pixels.

    Args:
        semantic: ``[H, W]`` class ids (values outside the palette are void).
        instance: ``[H, W]`` 0 or segment id.
        segments: the instances (``segments[k - 1]`` has id k).
        palette: ``[C, 3]`` from :func:`class_palette`.

    Returns:
        ``[H, W, 3]`` uint8 RGB and ``[H, W]`` bool (False on void).
    """
    num_classes = len(palette)
    if semantic.dtype == np.uint8:
        # OpenCV's per-channel table lookup: one fast pass (void and unknown ids -> black).
        lut = np.zeros((256, 1, 3), np.uint8)
        lut[: min(num_classes, 256), 0] = palette[:256]
        colours = cv2.LUT(cv2.merge([semantic, semantic, semantic]), lut)
    else:  # 16/32-bit ids (models with more than 255 classes)
        lut = np.zeros((max(int(semantic.max(initial=0)) + 1, num_classes), 3), np.uint8)
        lut[:num_classes] = palette
        colours = lut[semantic]
    if segments:
        # Shade instance k of its class by a golden-ratio sequence: neighbours differ.
        shade = 0.55 + 0.45 * ((np.arange(1, len(segments) + 1) * _GOLDEN) % 1.0)
        base = palette[[min(s.category_id, num_classes - 1) for s in segments]].astype(np.float32)
        instance_lut = np.zeros((len(segments) + 1, 3), np.uint8)
        instance_lut[1:] = np.clip(base * shade[:, None] + (1 - shade[:, None]) * 40, 0, 255)
        in_instance = (instance > 0) & (instance <= len(segments))
        colours[in_instance] = instance_lut[instance[in_instance]]  # only the instances' pixels
    labelled = semantic < num_classes
    return colours, labelled


def draw_overlay(
    image: np.ndarray,
    semantic: np.ndarray,
    instance: np.ndarray,
    segments: Sequence[Segment],
    class_names: Sequence[str],
    alpha: float = 0.5,
    boxes: bool = True,
    labels: bool = True,
) -> np.ndarray:
    """The image blended with its panoptic colours, with instance boxes and labels.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        alpha: weight of the colours (0 = image only, 1 = colours only); void stays image.

    Returns:
        ``[H, W, 3]`` uint8 RGB, a new array.
    """
    palette = class_palette(len(class_names))
    colours, labelled = panoptic_colors(semantic, instance, segments, palette)
    out = cv2.addWeighted(np.ascontiguousarray(image), 1.0 - alpha, colours, alpha, 0.0)
    cv2.copyTo(image, (~labelled).view(np.uint8), out)  # void keeps the image
    scale = max(0.4, min(image.shape[:2]) / 900)
    thickness = max(1, round(scale * 2))
    for s in segments:
        x1, y1, x2, y2 = (round(v) for v in s.bbox)
        colour = tuple(int(c) for c in palette[min(s.category_id, len(palette) - 1)])
        if boxes:
            cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness)
        if labels:
            name = class_names[s.category_id] if s.category_id < len(class_names) else str(s.category_id)
            _label(out, f"{name} {s.score:.2f}", (x1, y1), scale, thickness)
    return out


def _label(image: np.ndarray, text: str, corner: tuple[int, int], scale: float, thickness: int) -> None:
    """White text on a dark box at the top-left ``corner`` of a box, kept inside the image."""
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = min(max(corner[0], 0), max(0, image.shape[1] - w - 2))
    y = max(corner[1], h + baseline + 2)
    cv2.rectangle(image, (x, y - h - baseline - 2), (x + w + 2, y), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x + 1, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)  # fmt: skip

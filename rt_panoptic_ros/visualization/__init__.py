"""Colours for people: panoptic overlays shared by ``rt-panoptic-infer`` and the node.

Robots read the id images; these pictures are for humans (RViz, reports). Every class has a
fixed colour, instances of one class are told apart by shade, and labels are white on a dark
box so they stay readable on any background. numpy + OpenCV, no ROS; torch only for id maps
that are already torch tensors (imported by the caller, never here at import time).

Where the work is (``benchmarks/overlay.json``): the colouring and blend of the id maps, on the
host (:mod:`.host_blend`, numpy maps) or on the maps' device (:mod:`.device_blend`, CUDA
tensors), the same picture byte for byte; then boxes and labels per instance with OpenCV, here.
"""

from __future__ import annotations

import colorsys
import sys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from rt_panoptic_ros.panoptic.result import InstanceSegment
from rt_panoptic_ros.visualization.device_blend import blend_on_device
from rt_panoptic_ros.visualization.host_blend import blend_on_host

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


def instance_colours(segments: Sequence[InstanceSegment], palette: np.ndarray) -> np.ndarray:
    """``[K, 3]`` uint8 RGB of ``segments``: the class colour, shaded by a golden-ratio sequence
    of the segment's ``id`` so that neighbouring instances of one class differ, and a tracked
    object (its ``id`` a track id) keeps its colour from frame to frame."""
    if not segments:
        return np.zeros((0, 3), np.uint8)
    shade = 0.55 + 0.45 * ((np.array([s.id for s in segments], dtype=np.float64) * _GOLDEN) % 1.0)
    base = palette[[min(s.category_id, len(palette) - 1) for s in segments]].astype(np.float32)
    return np.clip(base * shade[:, None] + (1 - shade[:, None]) * 40, 0, 255).astype(np.uint8)


def panoptic_colors(
    semantic: np.ndarray, instance: np.ndarray, segments: Sequence[InstanceSegment], palette: np.ndarray
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
        instance_lut = np.concatenate([np.zeros((1, 3), np.uint8), instance_colours(segments, palette)])
        in_instance = (instance > 0) & (instance <= len(segments))
        colours[in_instance] = instance_lut[instance[in_instance]]  # only the instances' pixels
    labelled = semantic < num_classes
    return colours, labelled


def draw_overlay(
    image: np.ndarray,
    semantic: Any,
    instance: Any,
    segments: Sequence[InstanceSegment],
    class_names: Sequence[str],
    alpha: float = 0.5,
    boxes: bool = True,
    labels: bool = True,
    scale: float = 1.0,
) -> np.ndarray:
    """The image blended with its panoptic colours, with instance boxes and labels.

    Stuff pixels take their class colour, pixels of instance k the shade of its class from
    :func:`instance_colours`, void pixels (class id outside ``class_names``) stay the image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB (numpy).
        semantic: ``[H, W]`` class ids, as in ``PanopticResult.semantic``: a numpy array or a
            torch tensor. CUDA tensors are coloured and blended on their device and one uint8
            image comes back; CPU tensors take the numpy path.
        instance: ``[H, W]`` 0 or k for ``segments[k - 1]`` (``PanopticResult.segment_index``:
            a tracked result's frame-local map, not its track ids), numpy or torch.
        segments: the instances in that order; their ``bbox`` is in ``image`` pixels, their
            ``id`` (a track id when tracked) picks the shade.
        class_names: one name per class id; also fixes the palette (:func:`class_palette`).
        alpha: weight of the colours (0 = image only, 1 = colours only); void stays image.
        boxes, labels: draw each instance's box in its class colour, and "name score" on it.
        scale: in (0, 1]; draw a smaller picture. The image is shrunk first (``INTER_AREA``),
            the id maps by nearest neighbour (the colours are then as drawing at full size and
            shrinking, but for edges between ids), boxes with them, so a small overlay costs
            little. Label text is sized for the picture drawn, like that of any image of its
            size: in proportion, but no smaller than font scale 0.4 (pictures under 360 rows).

    Returns:
        ``[round(H * scale), round(W * scale), 3]`` uint8 RGB, a new array.

    Raises:
        ValueError: ``scale`` outside (0, 1], or id maps of another size than the image.
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    if tuple(semantic.shape) != (height, width) or tuple(instance.shape) != (height, width):
        raise ValueError(
            f"semantic {tuple(semantic.shape)} and instance {tuple(instance.shape)} must be the "
            f"image's size {(height, width)}"
        )
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    rgb = image if size == (height, width) else cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
    palette = class_palette(len(class_names))
    table = np.concatenate([palette, instance_colours(segments, palette)])  # [C + K, 3], by id
    if _on_accelerator(semantic):
        out = blend_on_device(rgb, semantic, instance, table, len(class_names), alpha)
    else:
        semantic, instance = np.asarray(semantic), np.asarray(instance)  # CPU tensors: no copy
        out = blend_on_host(rgb, semantic, instance, table, len(class_names), alpha)
    _draw_instances(out, segments, class_names, palette, (size[1] / width, size[0] / height), boxes, labels)
    return out


def _on_accelerator(ids: Any) -> bool:
    """Whether ``ids`` is a torch tensor off the CPU (torch is never imported here for this)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(ids, torch.Tensor) and ids.device.type != "cpu"


def _draw_instances(
    out: np.ndarray,
    segments: Sequence[InstanceSegment],
    class_names: Sequence[str],
    palette: np.ndarray,
    scale_xy: tuple[float, float],
    boxes: bool,
    labels: bool,
) -> None:
    """Each instance's box in its class colour and its "name score" label, in place on ``out``
    (boxes given in the source image's pixels, ``scale_xy`` from there to ``out``)."""
    if not (boxes or labels):
        return
    font_scale = max(0.4, min(out.shape[:2]) / 900)
    thickness = max(1, round(font_scale * 2))
    sx, sy = scale_xy
    for s in segments:
        x1, y1, x2, y2 = (round(v * f) for v, f in zip(s.bbox, (sx, sy, sx, sy), strict=True))
        colour = tuple(int(c) for c in palette[min(s.category_id, len(palette) - 1)])
        if boxes:
            cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness)
        if labels:
            name = class_names[s.category_id] if s.category_id < len(class_names) else str(s.category_id)
            _label(out, f"{name} {s.score:.2f}", (x1, y1), font_scale, thickness)


def _label(image: np.ndarray, text: str, corner: tuple[int, int], scale: float, thickness: int) -> None:
    """White text on a dark box at the top-left ``corner`` of a box, kept inside the image."""
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = min(max(corner[0], 0), max(0, image.shape[1] - w - 2))
    y = max(corner[1], h + baseline + 2)
    cv2.rectangle(image, (x, y - h - baseline - 2), (x + w + 2, y), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x + 1, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)  # fmt: skip

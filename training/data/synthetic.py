"""Procedural street-like scenes in the COCO panoptic format (``rt-panoptic-synth``).

A scene has a horizon, sky, buildings with windows, trees and bushes, a sidewalk and a road in
perspective with lane marks (stuff), and people, cars, trucks and bicycles (things) standing
on the ground, sized by their distance to the horizon (a range of scales from a few pixels to
larger than the image), drawn far to near so that near objects occlude far ones, some cut
off at the image border. Some scenes hold a crowd of people or a row of parked cars labelled
as one crowd region (``iscrowd = 1``). Poles, roadside clutter and the ego vehicle's bonnet are
VOID (id 0). Every class has its own shapes, colours and texture noise, plus a smooth
illumination field, so a small network can learn it and the decoder's errors look like real
ones.

Ids follow Cityscapes: category ids are Cityscapes label ids (road 7, ..., bicycle 33), a stuff
segment's id is its category id, a thing's is ``category_id * 1000 + k``, a crowd region's is
its category id. Image ``i`` of seed ``s`` depends on ``(s, i)`` only, so ``--num`` can grow
without changing the first images. Output::

    OUT/images/synth_000000.png     RGB image
    OUT/panoptic/synth_000000.png   segment ids R + 256·G + 256²·B
    OUT/panoptic.json               images, annotations (image id = file stem), categories

Videos of these scenes, with stable segment ids: ``synthetic_video.py``. The command
``rt-panoptic-synth`` is ``training/synth.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from rt_panoptic_ros.config import DatasetMeta
from rt_panoptic_ros.image_io import write_panoptic_png, write_rgb
from rt_panoptic_ros.training.data.panoptic_format import (
    Category,
    CategoryMap,
    segment_boxes,
)

RGB = tuple[int, int, int]

#: (name, category id, isthing, colour in the JSON): Cityscapes label ids and colours.
CLASSES: tuple[tuple[str, int, bool, RGB], ...] = (
    ("road", 7, False, (128, 64, 128)),
    ("sidewalk", 8, False, (244, 35, 232)),
    ("building", 11, False, (70, 70, 70)),
    ("vegetation", 21, False, (107, 142, 35)),
    ("sky", 23, False, (70, 130, 180)),
    ("person", 24, True, (220, 20, 60)),
    ("car", 26, True, (0, 0, 142)),
    ("truck", 27, True, (0, 0, 70)),
    ("bicycle", 33, True, (119, 11, 32)),
)
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, PERSON, CAR, TRUCK, BICYCLE = (c[1] for c in CLASSES)
#: Segment id of VOID pixels.
VOID = 0
#: Texture noise (standard deviation, 0..255 scale) of each category's pixels; VOID at index 0.
_NOISE = {VOID: 6.0, ROAD: 7.0, SIDEWALK: 6.0, BUILDING: 6.0, VEGETATION: 24.0, SKY: 2.0,
          PERSON: 7.0, CAR: 5.0, TRUCK: 5.0, BICYCLE: 6.0}  # fmt: skip

DEFAULT_HEIGHT, DEFAULT_WIDTH = 512, 1024


def synthetic_categories() -> tuple[Category, ...]:
    """The synthetic dataset's categories, as its JSON lists them."""
    return tuple(Category(id=cid, name=name, isthing=isthing) for name, cid, isthing, _ in CLASSES)


def synthetic_meta() -> DatasetMeta:
    """The :class:`DatasetMeta` of a model for the synthetic dataset (9 classes, things 5..8).

    Equal to what :class:`~.coco_panoptic.PanopticDataset` derives from ``panoptic.json``.
    """
    return CategoryMap(synthetic_categories()).to_meta("synthetic")


@dataclass(frozen=True)
class Scene:
    """One generated scene.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        ids: ``[H, W]`` uint32 segment ids (0 = VOID).
        segments: ``segments_info`` entries (``id``, ``category_id``, ``area``, ``bbox``
            ``[x, y, w, h]``, ``iscrowd``), sorted by id, one per id present in ``ids``.
    """

    image: np.ndarray
    ids: np.ndarray
    segments: list[dict[str, Any]]


class Canvas:
    """Draws every shape into the image and, with the same OpenCV call, into the id map,
    so that labels and pixels agree exactly (no anti-aliasing)."""

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        self.height, self.width, self.rng = height, width, rng
        self.image = np.zeros((height, width, 3), np.uint8)
        self.ids = np.zeros((height, width), np.int32)

    def draw(
        self, shape: Callable[[np.ndarray, Any], Any], colour: Sequence[float], segment_id: int | None
    ) -> None:
        """``shape(canvas, value)`` with ``colour`` on the image and ``segment_id`` on the id map
        (``None``: image only, for markings that belong to the segment underneath)."""
        shape(self.image, tuple(int(c) for c in np.clip(colour, 0, 255)))
        if segment_id is not None:
            shape(self.ids, int(segment_id))

    def polygon(
        self, points: Sequence[tuple[float, float]], colour: Sequence[float], segment_id: int | None
    ) -> None:
        pts = np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)
        self.draw(lambda img, c: cv2.fillPoly(img, [pts], c), colour=colour, segment_id=segment_id)

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, colour: Sequence[float], segment_id: int | None
    ) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour, segment_id)

    def ellipse(
        self, cx: float, cy: float, ax: float, ay: float, colour: Sequence[float], segment_id: int | None
    ) -> None:
        centre, axes = (round(cx), round(cy)), (max(1, round(ax)), max(1, round(ay)))
        self.draw(
            lambda img, c: cv2.ellipse(img, centre, axes, 0, 0, 360, c, -1),
            colour=colour,
            segment_id=segment_id,
        )

    def ring(
        self, cx: float, cy: float, r: float, thickness: float, colour: Sequence[float], segment_id: int
    ) -> None:
        centre, radius, t = (round(cx), round(cy)), max(1, round(r)), max(1, round(thickness))
        self.draw(lambda img, c: cv2.circle(img, centre, radius, c, t), colour=colour, segment_id=segment_id)

    def line(
        self,
        p: tuple[float, float],
        q: tuple[float, float],
        thickness: float,
        colour: Sequence[float],
        segment_id: int,
    ) -> None:
        a, b, t = (round(p[0]), round(p[1])), (round(q[0]), round(q[1])), max(1, round(thickness))
        self.draw(lambda img, c: cv2.line(img, a, b, c, t), colour=colour, segment_id=segment_id)

    def jitter(self, colour: Sequence[float], amount: float) -> np.ndarray:
        return np.asarray(colour, np.float64) + self.rng.uniform(-amount, amount, 3)


def draw_background(cv: Canvas, horizon: float) -> None:
    """Sky, buildings, trees, sidewalk and road (stuff), back to front."""
    h, w, rng = cv.height, cv.width, cv.rng
    # Sky: brighter towards the horizon.
    top, bottom = cv.jitter((95, 150, 215), 20), cv.jitter((185, 205, 235), 15)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    cv.image[:] = np.clip((1 - t) * top + t * bottom, 0, 255).astype(np.uint8)
    cv.ids[:] = SKY
    # Buildings: a street front with gaps, windows drawn on the image only.
    x = rng.uniform(-0.1, 0.05) * w
    while x < w:
        width = rng.uniform(0.07, 0.22) * w
        if rng.random() < 0.85:
            roof = horizon - rng.uniform(0.08, 0.4) * h
            base = horizon + rng.uniform(0.0, 0.03) * h
            colour = cv.jitter(
                rng.choice([(125, 115, 105), (150, 142, 132), (100, 100, 112), (165, 125, 100)]), 15
            )
            cv.rect(x, roof, x + width, base, colour, BUILDING)
            win = max(2.0, rng.uniform(0.015, 0.03) * h)
            shade = colour * rng.uniform(0.45, 0.7)
            for wy in np.arange(roof + win, base - 2 * win, 2.2 * win):
                for wx in np.arange(x + win, x + width - 1.5 * win, 2.0 * win):
                    cv.rect(wx, wy, wx + win, wy + 1.2 * win, shade, None)
        x += width + (rng.uniform(0.01, 0.08) * w if rng.random() < 0.3 else 0.0)
    # Trees (trunk and crown are both vegetation, as in Cityscapes) and bushes at the horizon.
    for _ in range(rng.integers(1, 6)):
        tx, size = rng.uniform(0, w), rng.uniform(0.06, 0.16) * h
        green = cv.jitter((55, 115, 40), 20)
        cv.rect(
            tx - 0.08 * size,
            horizon - 0.6 * size,
            tx + 0.08 * size,
            horizon + 0.02 * h,
            (90, 70, 50),
            VEGETATION,
        )
        cv.ellipse(tx, horizon - 1.2 * size, 0.8 * size, 0.75 * size, green, VEGETATION)
    for _ in range(rng.integers(0, 5)):
        cv.ellipse(rng.uniform(0, w), horizon, rng.uniform(0.03, 0.1) * w, rng.uniform(0.02, 0.05) * h,
                   cv.jitter((70, 125, 45), 20), VEGETATION)  # fmt: skip
    # Ground: sidewalk everywhere below the horizon, the road a trapezoid to a vanishing point.
    cv.rect(0, horizon, w, h, cv.jitter((175, 160, 160), 12), SIDEWALK)
    vx, top_half = rng.uniform(0.35, 0.65) * w, rng.uniform(0.02, 0.06) * w
    left, right = rng.uniform(-0.4, 0.15) * w, rng.uniform(0.85, 1.4) * w
    road = cv.jitter((88, 86, 92), 10)
    cv.polygon([(vx - top_half, horizon), (vx + top_half, horizon), (right, h), (left, h)], road, ROAD)
    # Dashed centre line, drawn in perspective: on the image only, the pixels stay road.
    bottom_x = (left + right) / 2
    for s0 in np.arange(0.05, 1.0, 0.12):
        s1 = s0 + 0.05
        y0, y1 = horizon + s0 * (h - horizon), horizon + s1 * (h - horizon)
        x0, x1 = vx + s0 * (bottom_x - vx), vx + s1 * (bottom_x - vx)
        half0, half1 = 0.004 * w * s0 + 0.5, 0.004 * w * s1 + 0.5
        cv.polygon(
            [(x0 - half0, y0), (x0 + half0, y0), (x1 + half1, y1), (x1 - half1, y1)], (235, 235, 225), None
        )


def _person(cv: Canvas, cx: float, ground: float, height: float, segment_id: int) -> None:
    hgt, shirt = height, cv.jitter((200, 45, 60), 45)
    legs = cv.jitter((45, 45, 70), 20)
    gap = 0.03 * hgt
    cv.rect(cx - gap - 0.1 * hgt, ground - 0.47 * hgt, cx - gap, ground, legs, segment_id)
    cv.rect(cx + gap, ground - 0.47 * hgt, cx + gap + 0.1 * hgt, ground, legs, segment_id)
    cv.ellipse(cx, ground - 0.63 * hgt, 0.16 * hgt, 0.21 * hgt, shirt, segment_id)
    cv.ellipse(cx, ground - 0.9 * hgt, 0.075 * hgt, 0.095 * hgt, cv.jitter((225, 185, 155), 25), segment_id)


def _car(cv: Canvas, cx: float, ground: float, height: float, segment_id: int) -> None:
    h, w = height, 2.3 * height
    body = cv.jitter((45, 75, 190), 45)
    d = 1 if cv.rng.random() < 0.5 else -1  # which way it faces

    def side(fractions: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(cx + d * fx * w, ground - fy * h) for fx, fy in fractions]

    cv.polygon(side([(-0.28, 0.6), (-0.16, 1.0), (0.2, 1.0), (0.36, 0.6)]), body * 0.9, segment_id)  # cabin
    cv.polygon(side([(-0.22, 0.62), (-0.14, 0.92), (0.18, 0.92), (0.29, 0.62)]), (40, 50, 60), segment_id)
    cv.rect(cx - w / 2, ground - 0.62 * h, cx + w / 2, ground - 0.12 * h, body, segment_id)
    for wx in (cx - 0.3 * w, cx + 0.3 * w):
        cv.ellipse(wx, ground - 0.15 * h, 0.15 * h, 0.15 * h, (25, 25, 25), segment_id)


def _truck(cv: Canvas, cx: float, ground: float, height: float, segment_id: int) -> None:
    h, w = height, 2.0 * height
    d = 1 if cv.rng.random() < 0.5 else -1
    cargo = cv.jitter((225, 175, 45), 30)
    cab = cargo * 0.75
    xa, xb = cx - d * w / 2, cx + d * 0.22 * w
    cv.rect(min(xa, xb), ground - h, max(xa, xb), ground - 0.12 * h, cargo, segment_id)
    xc, xd = cx + d * 0.24 * w, cx + d * w / 2
    cv.rect(min(xc, xd), ground - 0.68 * h, max(xc, xd), ground - 0.12 * h, cab, segment_id)
    xe, xf = cx + d * 0.3 * w, cx + d * 0.46 * w
    cv.rect(min(xe, xf), ground - 0.62 * h, max(xe, xf), ground - 0.42 * h, (40, 50, 60), segment_id)
    for wx in (cx - d * 0.35 * w, cx - d * 0.1 * w, cx + d * 0.36 * w):
        cv.ellipse(wx, ground - 0.12 * h, 0.12 * h, 0.12 * h, (25, 25, 25), segment_id)


def _bicycle(cv: Canvas, cx: float, ground: float, height: float, segment_id: int) -> None:
    h = height
    r, t = 0.36 * h, max(1.0, 0.07 * h)
    frame = cv.jitter((160, 35, 150), 35)
    rear, front = (cx - 0.45 * h, ground - r), (cx + 0.45 * h, ground - r)
    seat, crank, head = (cx - 0.15 * h, ground - 0.95 * h), (cx, ground - r), (cx + 0.3 * h, ground - h)
    for wheel in (rear, front):
        cv.ring(*wheel, r - t / 2, t, (30, 30, 30), segment_id)
    for p, q in ((rear, seat), (seat, crank), (rear, crank), (crank, head), (seat, head), (head, front)):
        cv.line(p, q, t, frame, segment_id)


THING_DRAWINGS: dict[int, tuple[Callable[[Canvas, float, float, float, int], None], float]] = {
    # category -> (drawing, height of the object at the image bottom as a fraction of H)
    PERSON: (_person, 0.55),
    CAR: (_car, 0.38),
    TRUCK: (_truck, 0.5),
    BICYCLE: (_bicycle, 0.33),
}
#: How often each thing class is drawn, in ``THING_DRAWINGS`` order.
THING_FREQUENCY = (0.4, 0.3, 0.12, 0.18)


def generate_scene(
    rng: np.random.Generator, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH
) -> Scene:
    """Draw one scene; all randomness from ``rng``."""
    cv = Canvas(height, width, rng)
    horizon = rng.uniform(0.36, 0.52) * height
    draw_background(cv, horizon)

    def depth(ground: float) -> float:  # 0 at the horizon, 1 at the image bottom
        return (ground - horizon) / (height - horizon)

    # Everything standing on the ground, drawn far to near: (ground y, drawing, its arguments).
    items: list[tuple[float, Callable[..., None], tuple[Any, ...]]] = []
    counters = dict.fromkeys(THING_DRAWINGS, 0)
    for _ in range(rng.integers(4, 15)):
        cat = int(rng.choice(list(THING_DRAWINGS), p=THING_FREQUENCY))
        ground = horizon + rng.uniform(0.03, 1.2) * (height - horizon)  # past 1: cut off at the bottom
        size = THING_DRAWINGS[cat][1] * height * depth(ground) * rng.uniform(0.85, 1.15)
        if size < 4:
            continue
        cx = rng.uniform(-0.1, 1.1) * width
        items.append((ground, THING_DRAWINGS[cat][0], (cv, cx, ground, size, cat * 1000 + counters[cat])))
        counters[cat] += 1
    # Crowd regions: one segment per category whose id is the category id (Cityscapes style).
    for cat, prob, (low, high) in ((PERSON, 0.35, (4, 9)), (CAR, 0.2, (3, 6))):
        if rng.random() >= prob:
            continue
        ground = horizon + rng.uniform(0.05, 0.35) * (height - horizon)
        size = THING_DRAWINGS[cat][1] * height * depth(ground)
        x = rng.uniform(0.0, 0.8) * width
        step = (0.25 if cat == PERSON else 1.6) * size
        for _ in range(rng.integers(low, high)):
            member_ground = ground + rng.uniform(-0.05, 0.05) * size
            items.append((member_ground, THING_DRAWINGS[cat][0], (cv, x, member_ground, size, cat)))
            x += step * rng.uniform(0.7, 1.1)
    # VOID clutter, occluding and occluded like objects: poles and roadside boxes.
    for _ in range(rng.integers(0, 4)):
        ground = horizon + rng.uniform(0.05, 1.0) * (height - horizon)
        x, size = rng.uniform(0, width), 0.7 * height * depth(ground)
        t = max(1.0, 0.025 * size)
        items.append((ground, cv.rect, (x - t, ground - size, x + t, ground, (70, 70, 75), VOID)))
    for _ in range(rng.integers(0, 3)):
        ground = horizon + rng.uniform(0.05, 1.0) * (height - horizon)
        x, size = rng.uniform(0, width), 0.12 * height * depth(ground)
        items.append(
            (ground, cv.rect, (x - size, ground - size, x + size, ground, cv.jitter((120, 95, 70), 30), VOID))
        )
    for _, draw, args in sorted(items, key=lambda item: item[0]):
        draw(*args)
    if rng.random() < 0.5:  # the ego vehicle's bonnet, VOID as in Cityscapes
        cv.ellipse(width / 2, height * 1.08, width * rng.uniform(0.45, 0.7), height * rng.uniform(0.1, 0.18),
                   (30, 32, 38), VOID)  # fmt: skip

    image = add_texture(cv, rng)
    return Scene(image=image, ids=cv.ids.astype(np.uint32), segments=list_segments(cv.ids))


def add_texture(cv: Canvas, rng: np.random.Generator, light: np.ndarray | None = None) -> np.ndarray:
    """Per-class grain (``_NOISE``) and a smooth illumination field over the drawn image.

    ``light``: ``[4, 8]`` float32 standard normal samples of the illumination field, drawn from
    ``rng`` after the grain when not given (a video passes the same field to every frame).
    """
    h, w = cv.height, cv.width
    category = np.where(cv.ids >= 1000, cv.ids // 1000, cv.ids)  # [H, W] category id, 0 = VOID
    table = np.zeros(max(_NOISE) + 1, np.float32)
    table[list(_NOISE)] = list(_NOISE.values())
    grain = rng.standard_normal((h, w, 3), dtype=np.float32) * table[category][..., None]
    if light is None:
        light = rng.standard_normal((4, 8), dtype=np.float32)
    light = cv2.resize(light, (w, h), interpolation=cv2.INTER_CUBIC)
    image = cv.image.astype(np.float32) * (1.0 + 0.08 * light[..., None]) + grain
    return np.clip(image, 0, 255).round().astype(np.uint8)


def list_segments(ids: np.ndarray) -> list[dict[str, Any]]:
    """``segments_info`` of an id map: every non-zero id with its area and tight box."""
    present, index = np.unique(ids, return_inverse=True)
    index = index.reshape(ids.shape).astype(np.int32)
    if present[0] == VOID:
        present, index = present[1:], index - 1  # VOID becomes -1
    boxes, areas = segment_boxes(index, len(present))
    segments = []
    for segment_id, box, area in zip(present.tolist(), boxes.tolist(), areas.tolist(), strict=True):
        category = segment_id // 1000 if segment_id >= 1000 else segment_id
        x1, y1, x2, y2 = (int(v) for v in box)
        segments.append({
            "id": segment_id, "category_id": category, "area": area,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "iscrowd": int(segment_id < 1000 and category in THING_DRAWINGS),
        })  # fmt: skip
    return segments


def stem(index: int) -> str:
    """File stem and image id of image ``index``."""
    return f"synth_{index:06d}"


def write_dataset(
    out: str | Path,
    num: int,
    seed: int = 0,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    progress: bool | None = None,
) -> Path:
    """Write ``num`` scenes to ``out`` (layout in the module docstring); returns the JSON's path.

    Image ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "panoptic").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in tqdm(
        range(num), desc="rt-panoptic-synth", unit="image", disable=None if progress is None else not progress
    ):
        scene = generate_scene(np.random.default_rng([seed, index]), height, width)
        name = stem(index)
        write_rgb(out / "images" / f"{name}.png", scene.image)
        write_panoptic_png(out / "panoptic" / f"{name}.png", scene.ids)
        images.append({"id": name, "file_name": f"{name}.png", "height": height, "width": width})
        annotations.append({"image_id": name, "file_name": f"{name}.png", "segments_info": scene.segments})
    info = {
        "description": "rt_panoptic_ros synthetic street scenes",
        "seed": seed,
        "height": height,
        "width": width,
    }
    return write_panoptic_json(out, {"info": info, "images": images, "annotations": annotations})


def write_panoptic_json(out: Path, document: dict[str, Any]) -> Path:
    """``out/panoptic.json``: ``document`` (info, images, annotations, ...) plus the categories."""
    categories = [
        {"id": cid, "name": name, "supercategory": "thing" if isthing else "stuff", "isthing": int(isthing),
         "color": list(colour)}
        for name, cid, isthing, colour in CLASSES
    ]  # fmt: skip
    path = out / "panoptic.json"
    path.write_text(json.dumps({**document, "categories": categories}))
    return path

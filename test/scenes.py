"""Hand-built head outputs with a known panoptic answer, for decoder tests.

A scene is a canvas with stuff regions and boxed objects. Its head outputs say, as a
perfectly trained network would: the semantic class per pixel, levelness "level 0 (P3)" on
objects and background elsewhere, at every P3 location inside an object the exact l, t, r, b
of that object's box, and a box-class logit that is high only at chosen seed locations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from rt_panoptic_ros.config import FPN_STRIDES, Config, DatasetMeta, DecoderConfig
from rt_panoptic_ros.model import HeadOutputs

CLASSES = ("road", "sky", "car", "person")
ROAD, SKY, CAR, PERSON = range(4)
THINGS = (CAR, PERSON)
HIGH, LOW = 10.0, -10.0


@dataclass
class Obj:
    """An object: its box (x1, y1, x2, y2 in pixels, multiples of 8), class, and seeds.

    ``seeds`` are P3 locations (column, row) that fire with box-class logit ``logit``.
    """

    box: tuple[int, int, int, int]
    cls: int
    seeds: list[tuple[int, int]] = field(default_factory=list)
    logit: float = HIGH


def scene_config(**decoder) -> Config:
    meta = DatasetMeta(name="scene", class_names=CLASSES, thing_ids=THINGS)
    return Config(dataset=meta, decoder=dataclasses.replace(DecoderConfig(), **decoder))


def make_outputs(
    height: int, width: int, objects: list[Obj], semantic: torch.Tensor | None = None
) -> HeadOutputs:
    """Head outputs of one ``height x width`` image (multiples of 128).

    Args:
        semantic: ``[height, width]`` int class per pixel for the stuff/thing semantics;
            default: road in the lower half, sky in the upper, objects painted on top.
    """
    if semantic is None:
        semantic = torch.full((height, width), ROAD, dtype=torch.long)
        semantic[: height // 2] = SKY
        for o in objects:
            x1, y1, x2, y2 = o.box
            semantic[y1:y2, x1:x2] = o.cls
    s8 = semantic[4::8, 4::8]  # class at each stride-8 location centre
    semantic_logits = torch.full((1, len(CLASSES), height // 8, width // 8), LOW)
    semantic_logits.scatter_(1, s8[None, None], HIGH)

    h4, w4 = height // 4, width // 4
    levelness = torch.full((1, len(FPN_STRIDES) + 1, h4, w4), LOW)
    levelness[:, 0] = HIGH  # background
    box_cls, box_reg, centerness = [], [], []
    for stride in FPN_STRIDES:
        h, w = height // stride, width // stride
        box_cls.append(torch.full((1, len(THINGS), h, w), LOW))
        box_reg.append(torch.ones(1, 4, h, w))
        centerness.append(torch.zeros(1, 1, h, w))
    ys = torch.arange(height // 8)[:, None] * 8 + 4
    xs = torch.arange(width // 8)[None, :] * 8 + 4
    for o in objects:
        x1, y1, x2, y2 = o.box
        # The box is also written one location around the object, as a trained network's
        # smooth output would be, so that bilinear upsampling stays exact at its border.
        m = 8
        inside = (xs >= x1 - m) & (xs < x2 + m) & (ys >= y1 - m) & (ys < y2 + m)  # [h3, w3]
        ltrb = torch.stack(torch.broadcast_tensors(xs - x1, ys - y1, x2 - xs, y2 - ys)).float()  # [4, h3, w3]
        box_reg[0][0] = torch.where(inside[None], ltrb, box_reg[0][0])
        levelness[0, 0, y1 // 4 : y2 // 4, x1 // 4 : x2 // 4] = LOW
        levelness[0, 1, y1 // 4 : y2 // 4, x1 // 4 : x2 // 4] = HIGH
        for cx, cy in o.seeds:
            box_cls[0][0, THINGS.index(o.cls), cy, cx] = o.logit
    return HeadOutputs(
        semantic_logits=semantic_logits, levelness_logits=levelness,
        box_cls=box_cls, box_reg=box_reg, centerness=centerness,
    )  # fmt: skip


def centre_seed(box: tuple[int, int, int, int]) -> tuple[int, int]:
    """The P3 location (column, row) nearest the box centre."""
    x1, y1, x2, y2 = box
    return ((x1 + x2) // 2 // 8, (y1 + y2) // 2 // 8)


def batch(*outputs: HeadOutputs) -> HeadOutputs:
    """Concatenate single-image outputs into one batch."""
    return HeadOutputs(
        semantic_logits=torch.cat([o.semantic_logits for o in outputs]),
        levelness_logits=torch.cat([o.levelness_logits for o in outputs]),
        box_cls=[torch.cat(x) for x in zip(*(o.box_cls for o in outputs), strict=True)],
        box_reg=[torch.cat(x) for x in zip(*(o.box_reg for o in outputs), strict=True)],
        centerness=[torch.cat(x) for x in zip(*(o.centerness for o in outputs), strict=True)],
    )


def random_outputs(
    generator: torch.Generator,
    height: int,
    width: int,
    classes: int = len(CLASSES),
    things: int = len(THINGS),
) -> HeadOutputs:
    """Smooth random head outputs of one ``height x width`` input: many boundaries, many queries.

    Semantic and levelness logits are random fields at a quarter of their map's resolution,
    upsampled (so regions have boundaries in every direction); boxes of every level are random
    sizes up to four strides; box-class logits are mostly low with scattered candidates.
    """

    def field(channels: int, h: int, w: int, scale: float) -> torch.Tensor:
        coarse = torch.randn(1, channels, max(1, h // 4), max(1, w // 4), generator=generator) * scale
        return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)

    box_cls, box_reg, centerness = [], [], []
    for stride in FPN_STRIDES:
        h, w = height // stride, width // stride
        box_cls.append(torch.randn(1, things, h, w, generator=generator) * 3 - 3)
        box_reg.append(torch.rand(1, 4, h, w, generator=generator) * stride * 4 + 2)
        centerness.append(torch.randn(1, 1, h, w, generator=generator))
    return HeadOutputs(
        semantic_logits=field(classes, height // 8, width // 8, 4.0),
        levelness_logits=field(len(FPN_STRIDES) + 1, height // 4, width // 4, 3.0),
        box_cls=box_cls, box_reg=box_reg, centerness=centerness,
    )  # fmt: skip

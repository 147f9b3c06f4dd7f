"""Synthetic street videos with stable segment ids (``rt-panoptic-synth OUT --video``).

A video is one street scene of :mod:`.synthetic` (the same classes, shapes, colours, texture
and sizes by distance, so a model trained on the still images segments the frames as well)
seen for F frames:

- **things move** sideways at their own constant speed, each at its own distance (ground row),
  and turn round when well out of view, so in a long video they wander out and back in; nearer
  things are drawn over farther ones in every frame, so they **cross and occlude** each other;
- **scripted events**, timed to the video's length, in every video: one person or car walks
  or drives **out of the view and comes back** (out of view around the middle frame); and a
  near truck **passes in front of** a farther bicycle, hiding it completely at the middle frame
  ``F // 2`` (the bicycle is drawn small enough to fit inside the truck's cargo box);
- the camera **pans** at a constant rate in half of the videos: the background, the crowd
  regions and the VOID clutter (poles, roadside boxes) shift together; the ego vehicle's bonnet
  stays where it is. Illumination is the same in every frame; the texture grain is new in each.

Ids follow :mod:`.synthetic` (Cityscapes style): a thing is ``category_id * 1000 + k`` with
``k`` counted per category within the video, a crowd region or stuff segment is its category
id, and **a segment keeps its id in every frame of its video** (the convention of video
panoptic datasets such as Cityscapes-VPS and VIPSeg). A thing hidden or out of view in a frame
is absent from that frame's PNG and ``segments_info``, and has the same id when it reappears.
Video ``v`` of seed ``s`` depends on ``(s, v)`` and the frame count and size only, so
``--sequences`` can grow without changing the first videos. Output::

    OUT/images/video_0000_000000.png     RGB frame 0 of video 0
    OUT/panoptic/video_0000_000000.png   segment ids R + 256·G + 256²·B
    OUT/panoptic.json                    images (id = file stem, plus video_id "video_0000" and
                                         frame_index 0..F-1), annotations, categories, videos

The JSON is a still panoptic JSON too (``PanopticDataset`` and ``rt-panoptic-eval`` read it
as one), with the two extra fields on each image; ``rt-panoptic-eval --video`` uses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rt_panoptic_ros.image_io import write_panoptic_png, write_rgb
from rt_panoptic_ros.training.data.synthetic import (
    BICYCLE,
    CAR,
    DEFAULT_HEIGHT,
    DEFAULT_WIDTH,
    PERSON,
    THING_DRAWINGS,
    THING_FREQUENCY,
    TRUCK,
    VOID,
    Canvas,
    Scene,
    add_texture,
    draw_background,
    list_segments,
    write_panoptic_json,
)

#: A drawing: ``(canvas, centre column, ground row, height, segment id)``.
Drawing = Callable[[Canvas, float, float, float, int], None]

#: Half the width of each thing class's drawing in :mod:`.synthetic`, as a multiple of its
#: height (a car is 2.3 heights long, a bicycle's wheels reach 0.85 out): how far past the
#: border its centre must be for none of it to show.
HALF_WIDTH = {PERSON: 0.2, CAR: 1.2, TRUCK: 1.05, BICYCLE: 0.85}


@dataclass(frozen=True)
class Actor:
    """Something standing on the ground, drawn in every frame in depth order.

    Attributes:
        draw: how it is drawn.
        segment_id: its id in every frame (``VOID`` for clutter).
        ground: the image row it stands on (fixed: it moves sideways); sorts it far to near.
        size: its height in pixels.
        start: its centre column at frame 0 (in the panned background's columns if ``in_world``).
        speed: columns per frame, signed.
        turns: ``(left, right)`` columns where it turns round (``±inf``: never).
        appearance: seed of its colours and facing, the same in every frame.
        in_world: part of the scene (crowds, clutter): it pans with the background instead of
            moving on its own.
    """

    draw: Drawing
    segment_id: int
    ground: float
    size: float
    start: float
    speed: float = 0.0
    turns: tuple[float, float] = (-math.inf, math.inf)
    appearance: int = 0
    in_world: bool = False

    def centre(self, frame: int, pan_offset: int) -> float:
        """Its centre column in ``frame``, whose view starts at background column ``pan_offset``."""
        if self.in_world:
            return self.start - pan_offset
        return _bounce(self.start + self.speed * frame, *self.turns)


def _bounce(x: float, left: float, right: float) -> float:
    """``x`` reflected back and forth between ``left`` and ``right`` (either may be infinite)."""
    if x < left and right == math.inf:
        return 2 * left - x
    if x > right and left == -math.inf:
        return 2 * right - x
    if left == -math.inf or right == math.inf:
        return x
    period = 2 * (right - left)
    phase = (x - left) % period
    return left + (phase if phase <= right - left else period - phase)


@dataclass(frozen=True)
class VideoPlan:
    """Everything about one video that does not change from frame to frame.

    Attributes:
        background: ``[H, W + E, 3]`` uint8 RGB of the static scene, wider than a frame by the
            pan's extent E; ``background_ids``: ``[H, W + E]`` int32 its segment ids.
        offsets: ``[F]`` first background column of each frame's view.
        actors: far to near (ascending ``ground``).
        light: ``[4, 8]`` float32, the illumination field of every frame.
        bonnet: ``(centre x, centre y, half width, half height)`` of the ego vehicle's bonnet
            (VOID), or ``None``.
        noise_seed: frame ``t``'s grain comes from ``default_rng([*noise_seed, t])``.
    """

    height: int
    width: int
    background: np.ndarray
    background_ids: np.ndarray
    offsets: tuple[int, ...]
    actors: tuple[Actor, ...]
    light: np.ndarray
    bonnet: tuple[float, float, float, float] | None
    noise_seed: tuple[int, ...]

    @property
    def frames(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class VideoFrame:
    """One rendered frame.

    Attributes:
        scene: the image, its ``[H, W]`` uint32 segment ids and ``segments_info``.
        drawn_areas: segment id -> pixels each (non-crowd) thing covered in this frame before
            nearer things were drawn over it, 0 when out of view: the frame's ``area`` over this
            is the visible fraction (0 = hidden by occluders when this is not 0).
    """

    scene: Scene
    drawn_areas: dict[int, int]


def plan_video(
    rng: np.random.Generator, frames: int, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH
) -> VideoPlan:
    """Lay out one video of ``frames`` frames; all randomness from ``rng``."""
    horizon = rng.uniform(0.36, 0.52) * height
    pan = 0.0 if rng.random() < 0.5 else float(rng.choice([-1, 1]) * rng.uniform(0.002, 0.008) * width)
    extent = math.ceil(abs(pan) * (frames - 1))
    offsets = tuple(round(pan * t) + (extent if pan < 0 else 0) for t in range(frames))
    background = Canvas(height, width + extent, rng)
    draw_background(background, horizon)
    layout = _Layout(rng, frames, height, width, horizon, world_width=width + extent)
    layout.leave_and_return()
    layout.truck_passes_bicycle()
    layout.wanderers()
    layout.crowds()
    layout.clutter()
    bonnet = None
    if rng.random() < 0.5:
        bonnet = (width / 2, height * 1.08, width * rng.uniform(0.45, 0.7), height * rng.uniform(0.1, 0.18))
    return VideoPlan(
        height=height, width=width, background=background.image, background_ids=background.ids,
        offsets=offsets, actors=tuple(sorted(layout.actors, key=lambda a: a.ground)),
        light=rng.standard_normal((4, 8), dtype=np.float32), bonnet=bonnet,
        noise_seed=tuple(int(n) for n in rng.integers(0, 2**31, 2)),
    )  # fmt: skip


class _Layout:
    """Places the actors of one video (``plan_video``'s helper); ids count per category."""

    def __init__(
        self, rng: np.random.Generator, frames: int, height: int, width: int, horizon: float, world_width: int
    ):
        self.rng, self.frames, self.height, self.width = rng, frames, height, width
        self.horizon, self.world_width = horizon, world_width
        self.actors: list[Actor] = []
        self.counters = dict.fromkeys(THING_DRAWINGS, 0)

    def ground(self, depth: float) -> float:
        """The image row at ``depth`` (0 at the horizon, 1 at the image bottom)."""
        return self.horizon + depth * (self.height - self.horizon)

    def size(self, category: int, depth: float) -> float:
        """A thing's height at ``depth``, as :func:`.synthetic.generate_scene` sizes it."""
        return THING_DRAWINGS[category][1] * self.height * depth

    def add_thing(
        self,
        category: int,
        depth: float,
        size: float,
        start: float,
        speed: float,
        turns: tuple[float, float] = (-math.inf, math.inf),
    ) -> None:
        """A moving thing with the category's next id."""
        segment_id = category * 1000 + self.counters[category]
        self.counters[category] += 1
        self.actors.append(Actor(
            draw=THING_DRAWINGS[category][0], segment_id=segment_id, ground=self.ground(depth), size=size,
            start=start, speed=speed, turns=turns, appearance=int(self.rng.integers(2**63)),
        ))  # fmt: skip

    def leave_and_return(self) -> None:
        """A person or car at mid distance that is out of view from about frame F/4 to 3F/4."""
        category = PERSON if self.rng.random() < 0.5 else CAR
        depth = self.rng.uniform(0.3, 0.75)
        size = self.size(category, depth) * self.rng.uniform(0.9, 1.1)
        half = HALF_WIDTH[category] * size + 1
        turn_frame = (self.frames - 1) / 2
        start = self.rng.uniform(half, max(half, 0.45 * self.width))  # whole at frame 0, where it fits
        # Its centre reaches -half (all of it out) half way to the turn, so it is out of view
        # for the middle half of the video, turns round at the middle frame, and comes back.
        speed = -(start + half) / max(turn_frame / 2, 0.5)
        turn = start + speed * turn_frame
        if self.rng.random() < 0.5:  # out through the left border
            self.add_thing(category, depth, size, start=start, speed=speed, turns=(turn, math.inf))
        else:  # the mirror image: out through the right border
            mirrored = self.width - start
            self.add_thing(category, depth, size, start=mirrored, speed=-speed,
                           turns=(-math.inf, self.width - turn))  # fmt: skip

    def truck_passes_bicycle(self) -> None:
        """A near truck and a farther bicycle moving towards each other, aligned at frame F // 2.

        In units of the truck's height ``h``, its cargo box spans rows ``ground - h`` to
        ``ground - 0.12 h`` and columns ``-1.0 h .. 0.44 h`` from its centre (or mirrored). A
        bicycle at 0.55-0.7 of the truck's depth is 0.36-0.46 h tall, reaches 0.85 of its height
        to each side (at most 0.39 h) and, for every horizon the scenes use, stands 0.29-0.58 h
        behind the truck's ground row: inside the box. Centred on the truck at the middle frame,
        it is hidden completely, and visible again on the other side.
        """
        depth = self.rng.uniform(0.6, 0.9)
        truck = self.size(TRUCK, depth)
        bicycle_depth = depth * self.rng.uniform(0.55, 0.7)
        bicycle = self.size(BICYCLE, bicycle_depth)
        cross_frame = self.frames // 2
        centre = self.rng.uniform(0.4, 0.6) * self.width
        # Far enough apart at the first and last frames for neither to cover the other.
        apart = HALF_WIDTH[TRUCK] * truck + HALF_WIDTH[BICYCLE] * bicycle + 2
        closing = apart / max(1, min(cross_frame, self.frames - 1 - cross_frame))  # columns per frame
        direction = 1 if self.rng.random() < 0.5 else -1
        for category, obj_depth, size, speed in (
            (TRUCK, depth, truck, direction * closing / 2),
            (BICYCLE, bicycle_depth, bicycle, -direction * closing / 2),
        ):
            self.add_thing(category, obj_depth, size, start=centre - speed * cross_frame, speed=speed)

    def wanderers(self) -> None:
        """2-7 things at random distances and speeds, turning round when well out of view."""
        for _ in range(self.rng.integers(2, 8)):
            category = int(self.rng.choice(list(THING_DRAWINGS), p=THING_FREQUENCY))
            depth = self.rng.uniform(0.03, 1.2)  # past 1: cut off at the bottom
            size = self.size(category, depth) * self.rng.uniform(0.85, 1.15)
            if size < 4:
                continue
            speed = float(self.rng.choice([-1, 1]) * self.rng.uniform(0.003, 0.015) * self.width)
            start = self.rng.uniform(-0.1, 1.1) * self.width
            self.add_thing(category, depth, size, start=start, speed=speed,
                           turns=(-0.3 * self.width, 1.3 * self.width))  # fmt: skip

    def crowds(self) -> None:
        """Standing crowds and parked rows as one crowd region each, as in the still images."""
        for category, probability, (low, high) in ((PERSON, 0.35, (4, 9)), (CAR, 0.2, (3, 6))):
            if self.rng.random() >= probability:
                continue
            depth = self.rng.uniform(0.05, 0.35)
            size = self.size(category, depth)
            x = self.rng.uniform(0.0, 0.8) * self.world_width
            step = (0.25 if category == PERSON else 1.6) * size
            for _ in range(self.rng.integers(low, high)):
                member_depth = depth + self.rng.uniform(-0.05, 0.05) * size / (self.height - self.horizon)
                self.actors.append(Actor(
                    draw=THING_DRAWINGS[category][0], segment_id=category, ground=self.ground(member_depth),
                    size=size, start=x, appearance=int(self.rng.integers(2**63)), in_world=True,
                ))  # fmt: skip
                x += step * self.rng.uniform(0.7, 1.1)

    def clutter(self) -> None:
        """VOID poles and roadside boxes, standing in the scene."""
        for draw, most, height in ((_pole, 4, 0.7), (_box, 3, 0.12)):
            for _ in range(self.rng.integers(0, most)):
                depth = self.rng.uniform(0.05, 1.0)
                self.actors.append(Actor(
                    draw=draw, segment_id=VOID, ground=self.ground(depth), size=height * self.height * depth,
                    start=self.rng.uniform(0, self.world_width), appearance=int(self.rng.integers(2**63)),
                    in_world=True,
                ))  # fmt: skip


def _pole(cv: Canvas, cx: float, ground: float, size: float, segment_id: int) -> None:
    half = max(1.0, 0.025 * size)
    cv.rect(cx - half, ground - size, cx + half, ground, (70, 70, 75), segment_id)


def _box(cv: Canvas, cx: float, ground: float, size: float, segment_id: int) -> None:
    cv.rect(cx - size, ground - size, cx + size, ground, cv.jitter((120, 95, 70), 30), segment_id)


def render_frame(plan: VideoPlan, frame: int) -> VideoFrame:
    """Draw frame ``frame`` of ``plan``: the background's view, then the actors far to near."""
    height, width, offset = plan.height, plan.width, plan.offsets[frame]
    rng = np.random.default_rng([*plan.noise_seed, frame])
    cv = Canvas(height, width, rng)
    cv.image[:] = plan.background[:, offset : offset + width]
    cv.ids[:] = plan.background_ids[:, offset : offset + width]
    drawn_areas: dict[int, int] = {}
    for actor in plan.actors:
        cv.rng = np.random.default_rng(actor.appearance)  # same colours and facing in every frame
        actor.draw(cv, actor.centre(frame, offset), actor.ground, actor.size, actor.segment_id)
        if actor.segment_id >= 1000:  # nothing nearer drawn yet: all of it that is in view
            drawn_areas[actor.segment_id] = int(np.count_nonzero(cv.ids == actor.segment_id))
    cv.rng = rng
    if plan.bonnet is not None:
        cv.ellipse(*plan.bonnet, (30, 32, 38), VOID)
    image = add_texture(cv, rng, light=plan.light)
    scene = Scene(image=image, ids=cv.ids.astype(np.uint32), segments=list_segments(cv.ids))
    return VideoFrame(scene=scene, drawn_areas=drawn_areas)


def video_rng(seed: int, video: int) -> np.random.Generator:
    """The generator of video ``video`` of ``seed`` (its own stream, apart from the still images')."""
    return np.random.default_rng([seed, video, 1])


def video_name(video: int) -> str:
    """``video_id`` of video ``video``."""
    return f"video_{video:04d}"


def frame_stem(video: int, frame: int) -> str:
    """File stem and image id of frame ``frame`` of video ``video``."""
    return f"{video_name(video)}_{frame:06d}"


def write_video_dataset(
    out: str | Path,
    sequences: int,
    frames: int,
    seed: int = 0,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    progress: bool | None = None,
) -> Path:
    """Write ``sequences`` videos of ``frames`` frames to ``out`` (layout in the module
    docstring); returns the JSON's path. Video ``v`` is planned from :func:`video_rng`."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "panoptic").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    bar = tqdm(total=sequences * frames, desc="rt-panoptic-synth", unit="frame",
               disable=None if progress is None else not progress)  # fmt: skip
    with bar:
        for video in range(sequences):
            plan = plan_video(video_rng(seed, video), frames, height, width)
            for frame in range(frames):
                scene = render_frame(plan, frame).scene
                name = frame_stem(video, frame)
                write_rgb(out / "images" / f"{name}.png", scene.image)
                write_panoptic_png(out / "panoptic" / f"{name}.png", scene.ids)
                images.append({"id": name, "file_name": f"{name}.png", "height": height, "width": width,
                               "video_id": video_name(video), "frame_index": frame})  # fmt: skip
                annotations.append(
                    {"image_id": name, "file_name": f"{name}.png", "segments_info": scene.segments}
                )
                bar.update()
    info = {
        "description": "rt_panoptic_ros synthetic street videos",
        "seed": seed,
        "height": height,
        "width": width,
        "sequences": sequences,
        "frames": frames,
    }
    videos = [{"id": video_name(v), "frames": frames} for v in range(sequences)]
    return write_panoptic_json(
        out, {"info": info, "videos": videos, "images": images, "annotations": annotations}
    )

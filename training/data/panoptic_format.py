"""The COCO panoptic format: segment-id PNGs, their JSON, and the category table.

The format (cocodataset.org/#format-data, "panoptic segmentation"), as COCO panoptic 2017
ships it and as cityscapesscripts' ``csCreatePanopticImgs`` writes it:

- a PNG per image, 8-bit RGB, whose pixel holds the segment id ``R + 256·G + 256²·B``;
  id 0 (black) is VOID: unlabelled, ignored by training losses and by the evaluator;
- a JSON with ``images[]`` (``id``, ``file_name``, ``height``, ``width``), ``annotations[]``
  (``image_id``, ``file_name`` of the PNG, ``segments_info[]`` with ``id``, ``category_id``,
  ``iscrowd``, ``area``, ``bbox`` ``[x, y, w, h]``) and ``categories[]`` (``id``, ``name``,
  ``isthing``). Prediction files carry ``annotations[]`` only, with ``id`` and ``category_id``.

Everything here is NumPy and OpenCV; a malformed file raises
:class:`~rt_panoptic_ros.errors.DatasetError` naming the file and the field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rt_panoptic_ros.config import DatasetMeta
from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.image_io import VOID_SEGMENT

#: Segment id of VOID (unlabelled) pixels in a panoptic PNG.
#: Largest segment id an 8-bit RGB PNG can hold.
MAX_SEGMENT_ID = 256**3 - 1
#: Semantic label of VOID pixels in training targets (``ignore_index`` of the losses).
IGNORE_LABEL = 255
#: Listed segment ids below this index a lookup table directly (4 MiB of int32).
DIRECT_TABLE_LIMIT = 1 << 20

ImageId = int | str
VideoId = int | str


@dataclass(frozen=True)
class Category:
    """One entry of ``categories``: dataset id, name, and whether it is a thing class."""

    id: int
    name: str
    isthing: bool


@dataclass(frozen=True)
class Segment:
    """One entry of ``segments_info``. ``area`` is ``None`` when the file does not give it."""

    id: int
    category_id: int
    iscrowd: bool = False
    area: int | None = None


@dataclass(frozen=True)
class PanopticAnnotation:
    """One entry of ``annotations``: the PNG of one image and the segments it holds."""

    image_id: ImageId
    file_name: str
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class PanopticFile:
    """A parsed panoptic JSON.

    Attributes:
        path: the file it was read from (named in every error about it).
        annotations: in file order.
        categories: in file order; empty for a prediction file.
        images: ``images[]`` entries by image id (raw dictionaries); empty when absent.
    """

    path: Path
    annotations: tuple[PanopticAnnotation, ...]
    categories: tuple[Category, ...]
    images: dict[ImageId, dict[str, Any]]


class CategoryMap:
    """Dataset category ids <-> contiguous training ids, built from a JSON's ``categories``.

    The contiguous id of a category is its rank in ascending dataset-id order, as detectron2
    does for COCO panoptic. For Cityscapes written with ``--use-train-id`` the category ids
    are the train ids 0..18, so the contiguous ids *are* the train ids (things 11..18).
    """

    def __init__(self, categories: Sequence[Category], source: str = "categories"):
        if not categories:
            raise DatasetError(f"{source}: 'categories' is empty, expected at least one category")
        if len(categories) >= IGNORE_LABEL:
            raise DatasetError(f"{source}: {len(categories)} categories, at most {IGNORE_LABEL - 1} fit")
        ids = [c.id for c in categories]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise DatasetError(f"{source}: categories: duplicate id(s) {duplicates}")
        self.categories: tuple[Category, ...] = tuple(sorted(categories, key=lambda c: c.id))
        self.to_contiguous: dict[int, int] = {c.id: k for k, c in enumerate(self.categories)}
        #: ``[C]`` int64: dataset category id of each contiguous id.
        self.category_ids = np.array([c.id for c in self.categories], dtype=np.int64)
        #: ``[C]`` bool: whether each contiguous id is a thing class.
        self.isthing = np.array([c.isthing for c in self.categories], dtype=bool)

    def __len__(self) -> int:
        return len(self.categories)

    def contiguous(self, category_ids: Sequence[int], where: str) -> np.ndarray:
        """``[K]`` int64 contiguous ids of ``category_ids``; unknown ids raise naming ``where``."""
        try:
            return np.array([self.to_contiguous[c] for c in category_ids], dtype=np.int64)
        except KeyError as error:
            raise DatasetError(
                f"{where}: category_id {error.args[0]} is not one of the ground truth's categories"
            ) from None

    def to_meta(self, name: str) -> DatasetMeta:
        """The :class:`DatasetMeta` a model trained on this dataset is configured with."""
        return DatasetMeta(
            name=name,
            class_names=tuple(c.name for c in self.categories),
            thing_ids=tuple(int(k) for k in np.flatnonzero(self.isthing)),
            category_ids=tuple(int(c) for c in self.category_ids),
        )


def segment_slots(ids: np.ndarray, segment_ids: Sequence[int], where: str) -> np.ndarray:
    """Slot of each pixel's segment: ``[H, W]`` int32, 0 for VOID, ``k + 1`` for ``segment_ids[k]``.

    Args:
        ids: ``[H, W]`` uint32 segment ids of a panoptic PNG.
        segment_ids: the ids its ``segments_info`` lists (no 0, no duplicates).
        where: names the PNG and its JSON in the error.

    Raises:
        DatasetError: the PNG holds a non-zero id that ``segment_ids`` does not list.
    """
    table = np.array([VOID_SEGMENT, *segment_ids], dtype=np.uint32)  # slot -> id
    slot_numbers = np.arange(len(table), dtype=np.int32)
    # One gather through a small lookup table instead of a sort (np.unique / searchsorted are
    # 4-15x slower at 512x1024). Cityscapes-style ids (< 2^20) index the table directly;
    # COCO's random 24-bit colours index it by a window of their bits in which the listed ids
    # differ, and a pixel whose id is not listed is caught by comparing the id back.
    largest = int(table.max())
    if largest < DIRECT_TABLE_LIMIT:
        if ids.size and int(ids.max()) > largest:
            raise _unlisted(ids, ids > largest, where)
        lut = np.full(largest + 1, -1, np.int32)
        lut[table] = slot_numbers
        slots = np.take(lut, ids)  # np.take: ~1.5x faster than lut[ids] on uint32 indices
        if ids.size and int(slots.min()) < 0:
            raise _unlisted(ids, slots < 0, where)
        return slots
    shift, bits = _distinct_bit_window(table)
    mask = np.uint32((1 << bits) - 1)
    table_keys = (table >> np.uint32(shift)) & mask
    lut = np.zeros(1 << bits, np.int32)  # an unused key points at VOID's slot, whose id 0 differs
    lut[table_keys] = slot_numbers
    lut_ids = np.zeros(1 << bits, np.uint32)
    lut_ids[table_keys] = table
    keys = ids & mask if shift == 0 else (ids >> np.uint32(shift)) & mask
    slots = np.take(lut, keys)
    unlisted = np.take(lut_ids, keys) != ids
    if unlisted.any():
        raise _unlisted(ids, unlisted, where)
    return slots


def segment_index(ids: np.ndarray, segment_ids: Sequence[int], where: str) -> np.ndarray:
    """Position of each pixel's segment in ``segment_ids``: ``[H, W]`` int32, -1 for VOID.

    Same arguments and errors as :func:`segment_slots` (this is its result minus one).
    """
    slots = segment_slots(ids, segment_ids, where)
    slots -= 1
    return slots


def _distinct_bit_window(table: np.ndarray) -> tuple[int, int]:
    """``(shift, bits)`` such that ``(table >> shift) & (2^bits - 1)`` has no repeats."""
    first = max(8, len(table).bit_length() * 2 + 2)  # ~K^2 slots: random ids rarely collide
    for bits in range(min(first, 24), 25):
        for shift in range(0, 25 - bits):
            if len(np.unique((table >> np.uint32(shift)) & np.uint32((1 << bits) - 1))) == len(table):
                return shift, bits
    raise AssertionError("unreachable: 24 bits hold every id distinctly")


def _unlisted(ids: np.ndarray, where_bad: np.ndarray, where: str) -> DatasetError:
    bad = np.unique(ids[where_bad])
    shown = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
    return DatasetError(f"{where}: segment id(s) {shown} in the PNG are not listed in segments_info")


def segment_boxes(index: np.ndarray, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Tight boxes and pixel areas of every segment of an index map, without a per-segment loop.

    Args:
        index: ``[H, W]`` int segment index, -1 = VOID (:func:`segment_index`).
        num_segments: K.

    Returns:
        ``boxes`` ``[K, 4]`` float32 ``x1, y1, x2, y2`` in pixel-edge coordinates (a segment
        covering only pixel column 5 has ``x1 = 5, x2 = 6``; COCO's ``[x, y, w, h]`` is
        ``[x1, y1, x2 - x1, y2 - y1]``), all zero for a segment with no pixels; and ``areas``
        ``[K]`` int64.
    """
    height, width = index.shape
    valid = index >= 0
    seg = index[valid].astype(np.int64)
    ys, xs = np.nonzero(valid)
    areas = np.bincount(seg, minlength=num_segments)
    # Per-segment presence on each row and column: K*(H+W) counters from two bincounts.
    rows = np.bincount(seg * height + ys, minlength=num_segments * height).reshape(num_segments, height) > 0
    cols = np.bincount(seg * width + xs, minlength=num_segments * width).reshape(num_segments, width) > 0
    boxes = np.zeros((num_segments, 4), dtype=np.float32)
    present = areas > 0
    boxes[present, 0] = cols[present].argmax(1)
    boxes[present, 1] = rows[present].argmax(1)
    boxes[present, 2] = width - cols[present, ::-1].argmax(1)
    boxes[present, 3] = height - rows[present, ::-1].argmax(1)
    return boxes, areas


def load_panoptic_json(path: str | Path, *, ground_truth: bool) -> PanopticFile:
    """Read and check a panoptic JSON.

    Args:
        path: the JSON file.
        ground_truth: require ``categories`` (a prediction file may omit it).

    Raises:
        DatasetError: unreadable, not JSON, or a missing / ill-typed field, named as
            ``FILE: annotations[3].segments_info[1]: missing field 'category_id'``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: JSON file not found")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    reader = _Reader(path)
    reader.expect(data, dict, "top level")
    categories: tuple[Category, ...] = ()
    if ground_truth or "categories" in data:
        raw = reader.field(data, "categories", list, "")
        categories = tuple(reader.category(c, f"categories[{k}]") for k, c in enumerate(raw))
    annotations = tuple(
        reader.annotation(a, f"annotations[{k}]")
        for k, a in enumerate(reader.field(data, "annotations", list, ""))
    )
    seen: dict[ImageId, int] = {}
    for k, ann in enumerate(annotations):
        if ann.image_id in seen:
            first = seen[ann.image_id]
            raise DatasetError(
                f"{path}: annotations[{k}].image_id: {ann.image_id!r} repeats annotations[{first}]"
            )
        seen[ann.image_id] = k
    images: dict[ImageId, dict[str, Any]] = {}
    for k, image in enumerate(reader.expect(data.get("images", []), list, "images")):
        reader.expect(image, dict, f"images[{k}]")
        images[reader.field(image, "id", (int, str), f"images[{k}]")] = image
    return PanopticFile(path=path, annotations=annotations, categories=categories, images=images)


def video_positions(file: PanopticFile) -> dict[ImageId, tuple[VideoId, int]]:
    """Video and frame of every annotated image, from its ``images[]`` entry's ``video_id`` and
    ``frame_index`` (the video panoptic datasets' convention: segment ids persist in a video).

    Raises:
        DatasetError: an annotation's image has no ``images[]`` entry, or lacks either field
            or has one of the wrong type, or two images are the same frame of a video.
    """
    reader = _Reader(file.path)
    positions: dict[ImageId, tuple[VideoId, int]] = {}
    seen: dict[tuple[VideoId, int], ImageId] = {}
    for k, ann in enumerate(file.annotations):
        image = file.images.get(ann.image_id)
        if image is None:
            raise DatasetError(
                f"{file.path}: annotations[{k}]: image_id {ann.image_id!r} has no images[] entry "
                "(videos need its video_id and frame_index)"
            )
        where = f"images[] entry of image_id {ann.image_id!r}"
        position = (
            reader.field(image, "video_id", (int, str), where),
            reader.field(image, "frame_index", int, where),
        )
        if position in seen:
            raise DatasetError(
                f"{file.path}: images {seen[position]!r} and {ann.image_id!r} are both frame_index "
                f"{position[1]} of video_id {position[0]!r}"
            )
        seen[position] = ann.image_id
        positions[ann.image_id] = position
    return positions


class _Reader:
    """Field-by-field checks of a panoptic JSON that name the file and the field."""

    def __init__(self, path: Path):
        self.path = path

    def expect(self, value: Any, kind: type | tuple[type, ...], where: str) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise DatasetError(f"{self.path}: {where}: expected {names}, got {value!r:.40}")
        return value

    def field(self, obj: dict, name: str, kind: type | tuple[type, ...], where: str) -> Any:
        if name not in obj:
            raise DatasetError(f"{self.path}: {where or 'top level'}: missing field {name!r}")
        return self.expect(obj[name], kind, f"{where}.{name}" if where else name)

    def category(self, obj: Any, where: str) -> Category:
        self.expect(obj, dict, where)
        isthing = self.field(obj, "isthing", (int, bool), where)
        if isthing not in (0, 1):
            raise DatasetError(f"{self.path}: {where}.isthing: {isthing!r}, expected 0 or 1")
        category_id = self.field(obj, "id", int, where)
        return Category(id=category_id, name=self.field(obj, "name", str, where), isthing=bool(isthing))

    def annotation(self, obj: Any, where: str) -> PanopticAnnotation:
        self.expect(obj, dict, where)
        image_id = self.field(obj, "image_id", (int, str), where)
        file_name = self.field(obj, "file_name", str, where)
        raw = self.field(obj, "segments_info", list, where)
        segments = tuple(self.segment(s, f"{where}.segments_info[{k}]") for k, s in enumerate(raw))
        ids = [s.id for s in segments]
        if len(set(ids)) != len(ids):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            raise DatasetError(f"{self.path}: {where}.segments_info: duplicate segment id(s) {duplicates}")
        return PanopticAnnotation(image_id=image_id, file_name=file_name, segments=segments)

    def segment(self, obj: Any, where: str) -> Segment:
        self.expect(obj, dict, where)
        segment_id = self.field(obj, "id", int, where)
        if not 0 < segment_id <= MAX_SEGMENT_ID:
            raise DatasetError(f"{self.path}: {where}.id: {segment_id}, expected 1..256^3-1 (0 is VOID)")
        iscrowd = self.expect(obj.get("iscrowd", 0), (int, bool), f"{where}.iscrowd")
        if iscrowd not in (0, 1):
            raise DatasetError(f"{self.path}: {where}.iscrowd: {iscrowd!r}, expected 0 or 1")
        area = obj.get("area")
        if area is not None and (self.expect(area, (int, float), f"{where}.area") < 0):
            raise DatasetError(f"{self.path}: {where}.area: {area!r}, expected a pixel count >= 0")
        return Segment(
            id=segment_id,
            category_id=self.field(obj, "category_id", int, where),
            iscrowd=bool(iscrowd),
            area=None if area is None else int(area),
        )


_TYPE_NAMES = {
    dict: "an object", list: "a list", int: "an integer", str: "a string", float: "a number", bool: "0 or 1",
}  # fmt: skip

"""A dataset in the COCO panoptic format, yielding what training needs.

Works for COCO panoptic 2017 as distributed and for Cityscapes as cityscapesscripts'
``csCreatePanopticImgs --use-train-id`` writes it (:mod:`.cityscapes`); see
``training/README.md`` for both layouts. The category table comes from the JSON
(:class:`~.panoptic_format.CategoryMap`), never from a hard-coded list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rt_panoptic_ros.config import DatasetMeta
from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.image_io import read_panoptic_png, read_rgb
from rt_panoptic_ros.training.data.panoptic_format import (
    IGNORE_LABEL,
    CategoryMap,
    PanopticAnnotation,
    load_panoptic_json,
    segment_boxes,
    segment_index,
)
from rt_panoptic_ros.training.data.transforms import Sample, Transform

#: Finds an image file from its ``images[]`` entry (which has at least ``id`` and ``file_name``).
ImagePath = Callable[[dict[str, Any]], Path]


class PanopticDataset(Dataset):
    """Images and panoptic training targets of a COCO-panoptic-format dataset.

    Item ``i`` is a dictionary:

    - ``image``: ``[3, H, W]`` uint8 RGB (the network normalises it itself);
    - ``semantic``: ``[H, W]`` int64 contiguous class ids (:attr:`meta`), ``255`` on VOID;
      crowd regions carry their class, as in Cityscapes' semantic labels;
    - ``masks``: ``[K, H, W]`` bool, one per thing segment with pixels left (crowd included);
    - ``boxes``: ``[K, 4]`` float32 ``x1, y1, x2, y2``, pixel-edge coordinates (a mask that
      covers only column 5 spans ``x1 = 5, x2 = 6``), moved with the augmentation;
    - ``classes``: ``[K]`` int64 contiguous (semantic) class ids;
    - ``thing_classes``: ``[K]`` int64 box-class channel, the index into ``meta.thing_ids``;
    - ``iscrowd``: ``[K]`` bool, crowd regions, which box targets should ignore;
    - ``image_id``: the dataset's id (int for COCO, the file stem for Cityscapes / synthetic).

    Args:
        json_file: the panoptic JSON (``images``, ``annotations``, ``categories``).
        panoptic_dir: folder of the panoptic PNGs (``annotations[].file_name``).
        image_dir: folder of the images (``images[].file_name``), unless ``image_path`` says.
        transforms: augmentation (``transforms.py``); ``None`` for none.
        image_path: where the image of an ``images[]`` entry is; default ``image_dir / file_name``.
        name: dataset name for :attr:`meta`.
        seed: makes the augmentation of item ``i`` in epoch ``e`` a function of
            ``(seed, e, i)``; ``None`` draws fresh randomness every time.
        check_files: check at construction that every image and PNG exists, so a missing
            file stops the run before training starts rather than hours into it.

    Raises:
        DatasetError: a malformed JSON, an annotation without an image entry, a missing file.
    """

    def __init__(
        self,
        json_file: str | Path,
        panoptic_dir: str | Path,
        image_dir: str | Path,
        transforms: Transform | None = None,
        image_path: ImagePath | None = None,
        name: str = "coco_panoptic",
        seed: int | None = None,
        check_files: bool = True,
    ):
        self.json = load_panoptic_json(json_file, ground_truth=True)
        self.categories = CategoryMap(self.json.categories, source=str(self.json.path))
        self.meta: DatasetMeta = self.categories.to_meta(name)
        self.panoptic_dir = Path(panoptic_dir)
        self.image_dir = Path(image_dir)
        self.transforms = transforms
        # A partial of a module-level function, not a lambda: DataLoader workers started with
        # "spawn" / "forkserver" pickle the dataset.
        self.image_path: ImagePath = image_path or functools.partial(image_under, self.image_dir)
        self.seed = seed
        self.epoch = 0
        self.annotations: tuple[PanopticAnnotation, ...] = self.json.annotations
        for k, ann in enumerate(self.annotations):
            where = f"{self.json.path}: annotations[{k}]"
            entry = self.json.images.get(ann.image_id)
            if entry is None:
                raise DatasetError(f"{where}: image_id {ann.image_id!r} has no entry in 'images'")
            if "file_name" not in entry:
                raise DatasetError(
                    f"{self.json.path}: images entry {ann.image_id!r}: missing field 'file_name'"
                )
            self.categories.contiguous([s.category_id for s in ann.segments], f"{where}.segments_info")
        if check_files:
            self.check_files()

    def __len__(self) -> int:
        return len(self.annotations)

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (but seeded) augmentation per epoch, as ``DistributedSampler`` does."""
        self.epoch = epoch

    def files(self, index: int) -> tuple[Path, Path]:
        """``(image file, panoptic PNG)`` of item ``index``."""
        ann = self.annotations[index]
        return self.image_path(self.json.images[ann.image_id]), self.panoptic_dir / ann.file_name

    def check_files(self) -> None:
        """Raise :class:`DatasetError` naming the first image or PNG that does not exist."""
        for index in range(len(self)):
            for path, what in zip(self.files(index), ("image", "panoptic PNG"), strict=True):
                if not path.is_file():
                    raise DatasetError(
                        f"{path}: {what} of image_id {self.annotations[index].image_id!r} not found"
                    )

    def load(self, index: int) -> Sample:
        """Item ``index`` before augmentation: image, segment index map and tight boxes."""
        ann = self.annotations[index]
        image_file, png_file = self.files(index)
        image = read_rgb(image_file)
        ids = read_panoptic_png(png_file)
        if ids.shape != image.shape[:2]:
            raise DatasetError(
                f"{png_file}: {ids.shape[0]}x{ids.shape[1]} does not match its image {image_file} "
                f"({image.shape[0]}x{image.shape[1]})"
            )
        segments = segment_index(ids, [s.id for s in ann.segments], f"{png_file} ({self.json.path})")
        boxes, _ = segment_boxes(segments, len(ann.segments))
        return Sample(image=image, segments=segments, boxes=boxes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        if self.transforms is not None:
            entropy = None if self.seed is None else (self.seed, self.epoch, index)
            sample = self.transforms(sample, np.random.default_rng(entropy))
        return self.targets(index, sample)

    def targets(self, index: int, sample: Sample) -> dict[str, Any]:
        """Training targets of an (augmented) sample of item ``index``."""
        ann = self.annotations[index]
        num = len(ann.segments)
        classes = self.categories.contiguous([s.category_id for s in ann.segments], "")  # [K] per segment
        # Index -1 (VOID) picks the trailing IGNORE_LABEL entry: one gather, no masking.
        lut = np.append(classes, IGNORE_LABEL)
        semantic = lut[sample.segments]  # [H, W] int64
        areas = np.bincount(sample.segments[sample.segments >= 0], minlength=num)
        boxes = sample.boxes
        keep = np.flatnonzero(
            self.categories.isthing[classes]
            & (areas > 0)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )
        masks = sample.segments[None] == keep[:, None, None]  # [K, H, W]
        thing_channel = np.cumsum(self.categories.isthing) - 1  # contiguous id -> box-class channel
        iscrowd = np.array([s.iscrowd for s in ann.segments], dtype=bool)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))),
            "semantic": torch.from_numpy(semantic),
            "masks": torch.from_numpy(masks),
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes[keep], dtype=np.float32)),
            "classes": torch.from_numpy(classes[keep]),
            "thing_classes": torch.from_numpy(thing_channel[classes[keep]]),
            "iscrowd": torch.from_numpy(iscrowd[keep]),
            "image_id": ann.image_id,
        }


def image_under(image_dir: Path, entry: dict[str, Any]) -> Path:
    """``image_dir / file_name`` of an ``images[]`` entry (COCO, synthetic)."""
    return image_dir / entry["file_name"]


def coco_panoptic(root: str | Path, split: str = "train", **kwargs: Any) -> PanopticDataset:
    """COCO panoptic 2017 as distributed, under ``root``:

    ``root/{split}2017/*.jpg``, ``root/annotations/panoptic_{split}2017.json`` and
    ``root/annotations/panoptic_{split}2017/*.png`` (``split`` is ``"train"`` or ``"val"``).
    Other keyword arguments go to :class:`PanopticDataset`.
    """
    root = Path(root)
    return PanopticDataset(
        json_file=root / "annotations" / f"panoptic_{split}2017.json",
        panoptic_dir=root / "annotations" / f"panoptic_{split}2017",
        image_dir=root / f"{split}2017",
        name=kwargs.pop("name", "coco_panoptic"),
        **kwargs,
    )

"""From a training config to batches: the datasets, padding items into a batch, and the loader.

:func:`build_dataset` makes the training (augmented, seeded) or validation dataset the config
names; :func:`collate` pads dataset items into a :class:`Batch`; :func:`train_batches` yields
the batches of step ``s`` on, epoch after epoch, with a :class:`~.sampler.ResumableSampler`,
so that a resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.image_fit import round_up
from rt_panoptic_ros.training.data.cityscapes import cityscapes_panoptic
from rt_panoptic_ros.training.data.coco_panoptic import PanopticDataset, coco_panoptic
from rt_panoptic_ros.training.data.sampler import ResumableSampler
from rt_panoptic_ros.training.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    Resize,
    Transform,
    cityscapes_train_transforms,
    coco_train_transforms,
)
from rt_panoptic_ros.training.targets import IGNORE_LABEL, Instances
from rt_panoptic_ros.training.train_config import TrainConfig


@dataclass
class Batch:
    """A padded batch.

    Attributes:
        images: ``[N, 3, H, W]`` uint8 RGB, H and W multiples of 128, zero padding.
        semantic: ``[N, H, W]`` int64 class ids, :data:`IGNORE_LABEL` on VOID and padding.
        image_sizes: ``[N, 2]`` int64 ``(H, W)`` of each image's content.
        instances: the batch's thing instances, masks on the padded grid.
    """

    images: Tensor
    semantic: Tensor
    image_sizes: Tensor
    instances: Instances

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.images.to(device, non_blocking=True), self.semantic.to(device, non_blocking=True),
            self.image_sizes.to(device), self.instances.to(device),
        )  # fmt: skip


def collate(items: list[dict[str, Any]]) -> Batch:
    """Pad dataset items (``PanopticDataset[i]``) to one batch, sizes rounded up to 128."""
    heights = [item["image"].shape[1] for item in items]
    widths = [item["image"].shape[2] for item in items]
    h, w = round_up(max(heights)), round_up(max(widths))
    n = len(items)
    images = torch.zeros((n, 3, h, w), dtype=torch.uint8)
    semantic = torch.full((n, h, w), IGNORE_LABEL, dtype=torch.long)
    masks = []
    for i, item in enumerate(items):
        hi, wi = item["image"].shape[1:]
        images[i, :, :hi, :wi] = item["image"]
        semantic[i, :hi, :wi] = item["semantic"]
        masks.append(F.pad(item["masks"], (0, w - wi, 0, h - hi)))
    counts = torch.tensor([len(item["boxes"]) for item in items])
    instances = Instances(
        image=torch.repeat_interleave(torch.arange(n), counts),
        boxes=torch.cat([item["boxes"] for item in items]).float().reshape(-1, 4),
        masks=torch.cat(masks) if masks else torch.zeros((0, h, w), dtype=torch.bool),
        thing_classes=torch.cat([item["thing_classes"] for item in items]).long(),
        iscrowd=torch.cat([item["iscrowd"] for item in items]).bool(),
    )
    sizes = torch.tensor(list(zip(heights, widths, strict=True)), dtype=torch.long)
    return Batch(images, semantic, sizes, instances)


def build_dataset(cfg: TrainConfig, train: bool) -> PanopticDataset:
    """The training (augmented, seeded) or validation dataset the config names.

    Raises:
        DatasetError: the path does not exist or does not hold the expected files.
    """
    d = cfg.data
    root = Path(d.root if train else d.val_root)
    what = "data.root" if train else "data.val_root"
    if not str(root) or not root.exists():
        raise DatasetError(f"{what}: {root}: no such folder (rt-panoptic-synth OUT writes a synthetic one)")
    # Validation images stay as they are: the evaluation fits them into the input size as the
    # Predictor does (rt_panoptic_ros.image_fit).
    steps: list[Transform] = [Resize(*d.size)] if train and d.size != (0, 0) else []
    if train and d.augment == "cityscapes":
        steps.append(cityscapes_train_transforms(crop=d.crop))
    elif train and d.augment == "coco":
        steps.append(coco_train_transforms())
    elif train and d.augment == "flip":
        steps.append(RandomHorizontalFlip(0.5))
    transforms = Compose(steps) if steps else None
    seed = cfg.run.seed if train else None
    if d.format == "folder":
        json_file = root / "panoptic.json"
        if not json_file.is_file():
            raise DatasetError(f"{what}: {json_file}: no such file (expected rt-panoptic-synth's layout)")
        return PanopticDataset(
            json_file,
            root / "panoptic",
            root / "images",
            transforms=transforms,
            name=d.name or root.name,
            seed=seed,
        )
    split = d.split if train else d.val_split
    make = coco_panoptic if d.format == "coco" else cityscapes_panoptic
    named = {"name": d.name} if d.name else {}
    return make(root, split, transforms=transforms, seed=seed, **named)


def train_batches(
    dataset: PanopticDataset,
    sampler: ResumableSampler,
    batch_size: int,
    start_step: int,
    workers: int,
    pin_memory: bool,
) -> Iterator[Batch]:
    """This process's batches of ``batch_size`` from step ``start_step`` on, epoch after epoch.

    Step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``, whether the run
    got there in one go or was resumed: the sampler skips what earlier steps consumed and the
    dataset's augmentation is seeded by (seed, epoch, index).
    """
    steps_per_epoch = sampler.epoch_length // batch_size
    epoch, done = divmod(start_step, steps_per_epoch)
    # Forked workers can hang in OpenCV's thread pool (training/README.md).
    context = "forkserver" if workers > 0 else None
    while True:
        sampler.set_epoch(epoch, skip=done * batch_size)
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=True, collate_fn=collate,
            num_workers=workers, multiprocessing_context=context, persistent_workers=False,
            pin_memory=pin_memory,
        )  # fmt: skip
        yield from loader
        epoch, done = epoch + 1, 0

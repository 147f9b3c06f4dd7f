"""Cityscapes in the COCO panoptic format, as cityscapesscripts writes it.

``CITYSCAPES_DATASET=root csCreatePanopticImgs --use-train-id --set-names train val`` writes
``root/gtFine/cityscapes_panoptic_{split}_trainId.json`` and the PNG folder next to it. Its
``categories`` are the 19 evaluated classes with their train ids 0..18 (things 11..18), the
layout of the TRI model. Two quirks handled here:

- its ``images[].file_name`` is ``<id>_gtFine_leftImg8bit.png``, a file that does not exist; the
  image is ``root/leftImg8bit/{split}/<city>/<id>_leftImg8bit.png``, found from the image id;
- a thing segment id below 1000 is a crowd region (``iscrowd = 1``); the JSON says so already.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from rt_panoptic_ros.training.data.coco_panoptic import PanopticDataset


def cityscapes_image_path(image_dir: Path, entry: dict[str, Any]) -> Path:
    """``image_dir/<city>/<id>_leftImg8bit.png`` for image id ``<city>_<seq>_<frame>``."""
    image_id = str(entry["id"])
    city = image_id.rsplit("_", 2)[0]
    return image_dir / city / f"{image_id}_leftImg8bit.png"


def cityscapes_panoptic(root: str | Path, split: str = "train", **kwargs: Any) -> PanopticDataset:
    """Cityscapes ``split`` under ``root`` (which holds ``leftImg8bit/`` and ``gtFine/``).

    Other keyword arguments go to :class:`PanopticDataset` (e.g. ``transforms``).
    """
    root = Path(root)
    gt = root / "gtFine"
    image_dir = root / "leftImg8bit" / split
    return PanopticDataset(
        json_file=gt / f"cityscapes_panoptic_{split}_trainId.json",
        panoptic_dir=gt / f"cityscapes_panoptic_{split}_trainId",
        image_dir=image_dir,
        image_path=functools.partial(cityscapes_image_path, image_dir),
        name=kwargs.pop("name", "cityscapes"),
        **kwargs,
    )

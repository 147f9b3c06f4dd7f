"""Datasets in the COCO panoptic format, their augmentation, and the synthetic dataset.

- ``panoptic_format.py``: JSON parsing and checks, the category table, segment lookups
  (the PNG files themselves: :mod:`rt_panoptic_ros.image_io`);
- ``coco_panoptic.py``: :class:`PanopticDataset` (COCO panoptic 2017 and any dataset in the
  format), ``cityscapes.py``: Cityscapes as cityscapesscripts writes it;
- ``transforms.py``: the paper's augmentation (and ``Resize`` for ``data.size``);
- ``build.py``: the datasets a training config names, batching (``collate`` -> ``Batch``) and
  the training loader; ``sampler.py``: ``ResumableSampler`` (exact resumes);
- ``synthetic.py``: procedural street scenes (``rt-panoptic-synth``), ``synthetic_video.py``:
  the same scenes as videos with stable segment ids (``--video``), ``perturb.py``: simulated
  predictions for testing and benchmarking evaluators.
"""

from rt_panoptic_ros.training.data.cityscapes import cityscapes_panoptic
from rt_panoptic_ros.training.data.coco_panoptic import PanopticDataset, coco_panoptic
from rt_panoptic_ros.training.data.panoptic_format import IGNORE_LABEL, CategoryMap, load_panoptic_json
from rt_panoptic_ros.training.data.synthetic import generate_scene, synthetic_meta, write_dataset
from rt_panoptic_ros.training.data.synthetic_video import write_video_dataset

__all__ = [
    "IGNORE_LABEL",
    "CategoryMap",
    "PanopticDataset",
    "cityscapes_panoptic",
    "coco_panoptic",
    "generate_scene",
    "load_panoptic_json",
    "synthetic_meta",
    "write_dataset",
    "write_video_dataset",
]

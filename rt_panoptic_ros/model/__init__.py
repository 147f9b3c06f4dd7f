"""The network of Hou et al. (CVPR 2020): backbone + FPN (``backbone.py``), the unified
panoptic head (``head.py``), the whole network (``network.py``), its model files
(``checkpoint.py``, ``tri_checkpoint.py``) and its inference form with the frozen BatchNorm
folded into the convolutions (``fold.py``)."""

from rt_panoptic_ros.model.checkpoint import load_model, save_checkpoint
from rt_panoptic_ros.model.fold import fold_frozen_batchnorm
from rt_panoptic_ros.model.head import HeadOutputs, PanopticHead
from rt_panoptic_ros.model.network import RTPanoNet

__all__ = [
    "HeadOutputs",
    "PanopticHead",
    "RTPanoNet",
    "fold_frozen_batchnorm",
    "load_model",
    "save_checkpoint",
]

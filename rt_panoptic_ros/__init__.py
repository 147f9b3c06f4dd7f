"""rt_panoptic_ros: real-time panoptic segmentation for ROS 2 (Hou et al., CVPR 2020).

Public entry points: :func:`load_model` (a self-describing model file -> ``RTPanoNet``) and
:class:`Predictor` (numpy RGB image -> :class:`~rt_panoptic_ros.panoptic.PanopticResult`).
ROS is only imported by the node modules, so this package works without it (on a GPU box,
in training, in CI).
"""

from rt_panoptic_ros.model import load_model
from rt_panoptic_ros.runtime import Predictor

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__", "load_model"]

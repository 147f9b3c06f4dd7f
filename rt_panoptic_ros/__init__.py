"""rt_panoptic_ros: real-time panoptic segmentation for ROS 2 (Hou et al., CVPR 2020).

Public entry points: :func:`load_model` (a self-describing model file -> ``RTPanoNet``) and
:class:`Predictor` (numpy RGB image -> :class:`~rt_panoptic_ros.panoptic.PanopticResult`).
ROS is only imported by the node modules, so this package works without it (on a GPU box,
in training, in CI). Both are imported on first use, so that tools which need neither
(image conversions, dataset scripts) start without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__", "load_model"]

if TYPE_CHECKING:
    from rt_panoptic_ros.model import load_model
    from rt_panoptic_ros.runtime import Predictor


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from rt_panoptic_ros.model import load_model

        return load_model
    if name == "Predictor":
        from rt_panoptic_ros.runtime import Predictor

        return Predictor
    raise AttributeError(f"module 'rt_panoptic_ros' has no attribute {name!r}")

"""Inference runtime: the :class:`Predictor` over interchangeable backends (``backends.py``)."""

from rt_panoptic_ros.runtime.predictor import Predictor

__all__ = ["Predictor"]

"""Stable instance ids across frames, ROS-free like :mod:`rt_panoptic_ros.panoptic`."""

from rt_panoptic_ros.tracking.tracker import MAX_TRACK_ID, PanopticTracker, Track

__all__ = ["MAX_TRACK_ID", "PanopticTracker", "Track"]

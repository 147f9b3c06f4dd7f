"""Stable instance ids across frames, ROS-free like :mod:`rt_panoptic_ros.panoptic`."""

from rt_panoptic_ros.tracking.tracker import (
    DEFAULT_TRACKING,
    MAX_TRACK_ID,
    PanopticTracker,
    Track,
    TrackingSettings,
)

__all__ = ["DEFAULT_TRACKING", "MAX_TRACK_ID", "PanopticTracker", "Track", "TrackingSettings"]

"""Offline tools over rosbag2 files: storage (read, write, atomically) and the segmentation run."""

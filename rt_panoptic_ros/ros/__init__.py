"""ROS 2 side: the panoptic node (``node.py``) and the plain pieces it wires together."""

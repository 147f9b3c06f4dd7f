"""The parameter-free panoptic decoder of paper Sec. 3: pure tensor ops, no parameters, no ROS.

``boxes.py`` dense boxes and the levelness box map (Eq. 8, 14), ``masks.py`` queries and
their masks (Eq. 4-7), ``fusion.py`` Kirillov fusion, ``decoder.py`` the whole chain,
``result.py`` what it returns.
"""

from rt_panoptic_ros.panoptic.decoder import decode
from rt_panoptic_ros.panoptic.fusion import VOID
from rt_panoptic_ros.panoptic.result import InstanceSegment, PanopticResult

__all__ = ["VOID", "InstanceSegment", "PanopticResult", "decode"]

"""The node's output contract: topic names, their history depth, and a result -> messages.

One definition for every producer of panoptic outputs, so that they cannot drift apart: the
node publishes these, the bag tool writes them (on the same names, in the image topic's
namespace), and the test harness and the demo subscribe to them.

    panoptic/semantic    sensor_msgs/Image          mono8 class ids (255 = void; mono16 past 255 classes)
    panoptic/instance    sensor_msgs/Image          mono16, 0 = none, k = detection id k
    panoptic/detections  vision_msgs/Detection2DArray
    panoptic/overlay     sensor_msgs/Image          rgb8, for RViz

Every message carries the input's header (stamp and frame_id unchanged). Beside them, what
the ids mean:

    panoptic/label_info  vision_msgs/LabelInfo      class id -> name; transient local, depth 1
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from rt_panoptic_ros.panoptic import PanopticResult
from rt_panoptic_ros.ros.image_conversion import instance_to_msg, rgb_to_msg, semantic_to_msg
from rt_panoptic_ros.ros.messages import detections_msg
from rt_panoptic_ros.visualization import draw_overlay

#: Output name -> (topic relative to the node's namespace, message type).
OUTPUT_TOPICS: dict[str, tuple[str, type]] = {
    "semantic": ("panoptic/semantic", Image),
    "instance": ("panoptic/instance", Image),
    "detections": ("panoptic/detections", Detection2DArray),
    "overlay": ("panoptic/overlay", Image),
}
#: Output history (keep last). benchmarks/dds.json, the node's four outputs of a 1024×2048 frame
#: (12.3 MB) to a subscriber with rclpy's defaults: with the shipped Fast DDS profile in the
#: node's process, depth 1 and 5 both delivered 20 of 20 at 2 and 10 Hz; without it (profile
#: turned off, or a user's profile) depth 1 delivered 9 of 20 at 2 Hz and 4 of 20 at 10 Hz,
#: because a reliable writer drops a sample from its history before the reader's repairs are
#: done, while depth 5 delivered 20 of 20 at both rates. The cost is memory (up to five samples
#: per topic kept for repairs), not latency.
OUTPUT_DEPTH = 5
#: ``vision_msgs/LabelInfo``, latched: published when it changes (start-up, a new threshold),
#: kept by the publisher (transient local, depth 1) for subscribers that come later.
LABEL_INFO_TOPIC = "panoptic/label_info"


def output_messages(
    header: Header,
    rgb: np.ndarray,
    result: PanopticResult,
    names: Collection[str],
    class_names: Sequence[str],
    overlay_alpha: float,
) -> dict[str, Any]:
    """The output messages of one segmented frame, for the outputs in ``names`` only.

    Args:
        header: the input's header, copied into every message.
        rgb: the input image ``[H, W, 3]`` uint8 (the overlay's background).
        result: the frame's :class:`PanopticResult` (maps on the CPU).
        names: which of :data:`OUTPUT_TOPICS` to build (work for the others is skipped).
    """
    semantic, instance = result.semantic.numpy(), result.instance.numpy()
    messages: dict[str, Any] = {}
    if "semantic" in names:
        messages["semantic"] = semantic_to_msg(semantic, header)
    if "instance" in names:
        messages["instance"] = instance_to_msg(instance, header)
    if "detections" in names:
        messages["detections"] = detections_msg(header, result.segments)
    if "overlay" in names:
        messages["overlay"] = overlay_message(header, rgb, result, class_names, overlay_alpha)
    return messages


def overlay_message(
    header: Header,
    rgb: np.ndarray,
    result: PanopticResult,
    class_names: Sequence[str],
    alpha: float,
    scale: float = 1.0,
    device_maps: tuple[Any, Any] | None = None,
) -> Image:
    """``panoptic/overlay``: the panoptic colours blended over ``rgb`` (weight ``alpha``), rgb8,
    ``scale`` times the image's size.

    ``device_maps``: the result's semantic and frame-local instance maps as the decoder left
    them on its device (CUDA): the overlay is then drawn there (``draw_overlay``), the same
    picture as from the host maps.
    """
    if device_maps is None:
        semantic, instance = result.semantic.numpy(), result.segment_index.numpy()
    else:
        semantic, instance = device_maps
    picture = draw_overlay(rgb, semantic, instance, result.segments, class_names, alpha, scale=scale)
    return rgb_to_msg(picture, header)

"""The node's input: one subscription whose reliability follows the camera's, and its counters.

``qos.py`` decides (``qos_reliability``: auto, reliable, best_effort); this file applies the
decision to an rclpy node: it looks at the input's publishers every :data:`INPUT_QOS_CHECK_S`,
replaces the subscription when the reliability should change (keeping the old one until the
new one has matched, so no frame falls between), and counts what arrives and what was lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from rt_panoptic_ros.ros.messages import stamp_ns
from rt_panoptic_ros.ros.qos import RELIABLE, InputQos, choose_input_qos
from rt_panoptic_ros.ros.stats import RateWindow
from rt_panoptic_ros.ros.transport_stats import TransportLoss

#: Seconds between two looks at the input's publishers (``qos_reliability:=auto``): a camera
#: that appears or changes its QoS is followed within this time; the look itself reads the
#: local graph cache (microseconds).
INPUT_QOS_CHECK_S = 0.5
#: Longest time the previous input subscription is kept after a QoS change while the new one
#: is being matched (discovery between two processes here: ~0.1 s), so no frame falls between.
RETIRE_AFTER_S = 2.0


class FollowingInput:
    """``message_type`` frames on ``topic`` to ``on_frame``, subscribed between :meth:`open`
    and :meth:`close`; the counters (``frames_in``, ``rate``, ``transport``, ``dds_lost``) last."""

    def __init__(
        self, node: Node, topic: str, message_type: type, setting: str, depth: int,
        on_frame: Callable[[Any], None],
    ) -> None:  # fmt: skip
        self.node, self.topic, self.message_type = node, topic, message_type
        self.setting, self.depth, self.on_frame = setting, depth, on_frame
        self.subscription = None
        self._retiring: tuple[Any, float] | None = None  # (old subscription, since)
        self._last_frame: tuple[str, int] | None = None
        self._timer = None
        self.qos: InputQos | None = None
        self.publishers = 0
        self.frames_in = 0
        self.rate = RateWindow()
        self.transport = TransportLoss()
        self.dds_lost = 0

    def open(self) -> str:
        """Subscribe (and keep following the camera); returns where and how, in one line."""
        self.update()
        self._timer = self.node.create_timer(INPUT_QOS_CHECK_S, self.update)
        return f"{self.node.resolve_topic_name(self.topic)} ({self.qos.describe()}, depth {self.depth})"

    def close(self) -> None:
        """No more frames: the subscription(s) and the timer go."""
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
        for subscription in (self.subscription, self._retiring[0] if self._retiring else None):
            if subscription is not None:
                self.node.destroy_subscription(subscription)
        self.subscription, self._retiring, self._timer, self.qos = None, None, None, None

    def update(self) -> None:
        """(Re)subscribe with the reliability that suits the input's publishers (qos.py).

        Runs at start-up and every :data:`INPUT_QOS_CHECK_S`; the subscription is replaced only
        when the reliability changes. The previous one stays until the new one has matched the
        publishers (or :data:`RETIRE_AFTER_S`), so no frame falls between the two; a frame that
        both deliver meanwhile is taken once (``_on_image``).
        """
        topic = self.node.resolve_topic_name(self.topic)
        publishers = [
            _reliability(info.qos_profile.reliability)
            for info in self.node.get_publishers_info_by_topic(topic)
        ]
        if self._retiring is not None:
            old, since = self._retiring
            matched = self.subscription.get_publisher_count() >= len(publishers)
            if matched or time.monotonic() - since > RETIRE_AFTER_S:
                self.node.destroy_subscription(old)
                self._retiring = None
        current = self.qos.reliability if self.qos else None
        choice = choose_input_qos(self.setting, publishers, current)
        self.publishers = len(publishers)
        if choice == self.qos:
            return
        if self.qos is None or choice.reliability != self.qos.reliability:
            reliability = (
                ReliabilityPolicy.RELIABLE
                if choice.reliability == RELIABLE
                else ReliabilityPolicy.BEST_EFFORT
            )
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth, reliability=reliability)
            previous = self.subscription
            # A publisher that cannot match (best effort to a reliable subscription) is a reason
            # to look again now, not a warning: auto follows it, explicit settings warn once.
            # Samples DDS itself saw lost (best effort: a sequence gap, or fragments that never
            # completed) are counted beside the estimate from the camera's stamps.
            events = SubscriptionEventCallbacks(
                incompatible_qos=lambda _: self.update(), message_lost=self._on_message_lost
            )
            self.subscription = self.node.create_subscription(
                self.message_type, self.topic, self._on_image, qos, event_callbacks=events
            )
            if self._retiring is not None:  # changed again before the last one retired
                self.node.destroy_subscription(self._retiring[0])
                self._retiring = None
            if previous is not None:
                self._retiring = (previous, time.monotonic())
        if self.qos is not None:  # the first choice is in the caller's line
            self.node.get_logger().info(
                f"input QoS on {topic}: {choice.describe()}" + (f"; {choice.hint}" if choice.hint else "")
            )
        if choice.warning:
            self.node.get_logger().warning(f"input QoS on {topic}: {choice.warning}")
        self.qos = choice

    def _on_image(self, message: Any) -> None:
        """Subscription callback: count the frame and hand it on (never blocks on inference)."""
        frame = (message.header.frame_id, stamp_ns(message.header))
        if self._retiring is not None and frame == self._last_frame:
            return  # the same frame from the old and the new subscription during a QoS change
        self._last_frame = frame
        self.frames_in += 1
        self.rate.tick()
        self.transport.add(frame[1], frame[0])
        self.on_frame(message)

    def _on_message_lost(self, event: Any) -> None:
        self.dds_lost += event.total_count_change


def _reliability(policy: ReliabilityPolicy) -> str:
    """A publisher's reliability as :func:`~rt_panoptic_ros.ros.qos.choose_input_qos` takes it."""
    if policy == ReliabilityPolicy.RELIABLE:
        return "reliable"
    if policy == ReliabilityPolicy.BEST_EFFORT:
        return "best_effort"
    return policy.name.lower()  # unknown, system_default: treated as not reliable

"""Follows a connector's notification topic: the notifications Debezium sends about one signal id."""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition

from ecst import kafka
from ecst.connectors.signals import Notification, parse_notification


def notification_offsets(bootstrap: kafka.KafkaSettings | str, topic: str) -> dict[int, int]:
    """The end offset of each partition of the notification topic now (none while it is missing):
    where to start following a signal about to be sent."""
    return {p: o for (_t, p), o in kafka.topic_offsets(bootstrap, [topic])[1].items()}


class NotificationFollower:
    """Reads the notification topic from `start` (partition -> offset; 0 for a partition not in
    it) and yields the notifications whose id is `signal_id`. The topic may not exist yet:
    Debezium creates it with its first notification, and the follower assigns it then."""

    def __init__(self, bootstrap: kafka.KafkaSettings | str, topic: str, signal_id: str,
                 start: dict[int, int], client: Any = None) -> None:
        self.settings = kafka.as_settings(bootstrap)
        self.topic, self.signal_id, self.start = topic, signal_id, dict(start)
        self.consumer = client if client is not None else kafka.consumer(
            self.settings, auto_offset_reset="earliest")
        self.assigned = False

    def _assign(self) -> None:
        parts = self.consumer.partitions_for_topic(self.topic)
        if not parts:
            self.consumer.topics()  # refresh metadata: the topic appears with the first notification
            return
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        for tp in tps:
            self.consumer.seek(tp, self.start.get(tp.partition, 0))
        self.assigned = True

    def poll(self) -> list[Notification]:
        """The signal's notifications that arrived since the last call (never waits)."""
        with kafka.reaching(self.settings, f"read notifications from {self.topic} on"):
            if not self.assigned:
                self._assign()
            if not self.assigned:
                return []
            batches = self.consumer.poll(timeout_ms=0)
        found = []
        for messages in batches.values():
            for m in messages:
                n = parse_notification(m.value)
                if n is not None and n.id == self.signal_id:
                    found.append(n)
        return found

    def close(self) -> None:
        self.consumer.close()

"""Just enough of kafka-python's consumer and producer for unit tests of the consumer loop:
records served from a list, commits and dead-letter sends recorded. The loop itself also runs
on the real stack (tests/integration/test_consumer_service.py)."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import TopicPartition


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class FakeConsumer:
    """One topic, one partition, holding `records` [(key, value), ...] from offset 0."""

    def __init__(self, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
        self.tp = TopicPartition(topic, 0)
        self.messages = [Message(topic, 0, i, k, v) for i, (k, v) in enumerate(records)]
        self.next = 0
        self.commits: list[dict] = []
        self.listener = None
        self.assigned: list[TopicPartition] | None = None  # set by `assign` (no group)
        self.polls_from: list[int] = []  # each position a poll started from (repeats once)

    def partitions_for_topic(self, topic):
        return {0} if topic == self.tp.topic else None

    def topics(self):
        return {self.tp.topic}

    def end_offsets(self, tps):
        return {tp: len(self.messages) for tp in tps}

    def beginning_offsets(self, tps):
        return {tp: 0 for tp in tps}

    def subscribe(self, topics, listener):
        self.listener = listener
        listener.on_partitions_assigned([self.tp])

    def assign(self, partitions):
        self.assigned = list(partitions)

    def assignment(self):
        return {self.tp}

    def poll(self, timeout_ms=0, max_records=None):
        if not self.polls_from or self.polls_from[-1] != self.next:
            self.polls_from.append(self.next)
        batch = self.messages[self.next:self.next + (max_records or 500)]
        self.next += len(batch)
        return {self.tp: batch} if batch else {}

    def seek(self, tp, offset):
        self.next = offset

    def seek_to_beginning(self, tp):
        self.next = 0

    def position(self, tp, timeout_ms=None):
        return self.next

    def highwater(self, tp):
        return len(self.messages)

    def pause(self, *tps):
        pass

    def resume(self, *tps):
        pass

    def commit(self, offsets=None):
        self.commits.append({(tp.topic, tp.partition): o.offset for tp, o in offsets.items()})

    def close(self, autocommit=False):
        pass


class _Sent:
    def get(self, timeout=None):
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = []

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, key, value, dict(headers or [])))
        return _Sent()

    def flush(self, timeout=None):
        pass

    def close(self):
        pass

"""Following the notification topic: it may appear only with the first notification; only the
signal's own notifications are returned; kafka errors name the servers."""

import json
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from ecst.connectors import notifications
from ecst.connectors.notifications import NotificationFollower, notification_offsets
from ecst.exceptions import KafkaUnavailableError

TOPIC = "producer.notifications"


def note(id_, type_):
    return SimpleNamespace(value=json.dumps({"id": id_, "aggregate_type": "Incremental Snapshot",
                                             "type": type_, "additional_data": {}}).encode())


class FakeConsumer:
    def __init__(self, partitions=None, batches=()):
        self.partitions, self.batches = partitions, list(batches)
        self.assigned, self.seeks, self.refreshed, self.closed = [], {}, 0, False

    def partitions_for_topic(self, topic):
        return self.partitions

    def topics(self):
        self.refreshed += 1

    def assign(self, tps):
        self.assigned = tps

    def seek(self, tp, offset):
        self.seeks[tp.partition] = offset

    def poll(self, timeout_ms):
        assert timeout_ms == 0  # never waits: the consumer loop is the one that waits
        return self.batches.pop(0) if self.batches else {}

    def close(self):
        self.closed = True


def test_the_follower_waits_for_the_topic_then_reads_from_the_start_offsets():
    client = FakeConsumer()
    follower = NotificationFollower("127.0.0.1:1", TOPIC, "ecst-1", {0: 17}, client=client)
    assert follower.poll() == [] and client.refreshed == 1 and not follower.assigned
    client.partitions = {0, 1}
    tp = TopicPartition(TOPIC, 0)
    client.batches = [{tp: [note("other", "STARTED"), note("ecst-1", "STARTED")]},
                      {tp: [note("ecst-1", "COMPLETED")]}]
    assert [n.type for n in follower.poll()] == ["STARTED"]
    assert client.seeks == {0: 17, 1: 0} and [t.partition for t in client.assigned] == [0, 1]
    assert [n.type for n in follower.poll()] == ["COMPLETED"]
    follower.close()
    assert client.closed


def test_a_kafka_error_becomes_one_line_naming_the_servers():
    class Failing(FakeConsumer):
        def partitions_for_topic(self, topic):
            raise KafkaTimeoutError("no metadata")

    follower = NotificationFollower("broker:9092", TOPIC, "ecst-1", {}, client=Failing())
    with pytest.raises(KafkaUnavailableError, match="broker:9092"):
        follower.poll()


def test_the_start_is_each_partitions_end_offset(monkeypatch):
    monkeypatch.setattr(notifications.kafka, "topic_offsets",
                        lambda bootstrap, topics: ({(TOPIC, 0): 0}, {(TOPIC, 0): 17, (TOPIC, 1): 3}))
    assert notification_offsets("127.0.0.1:1", TOPIC) == {0: 17, 1: 3}

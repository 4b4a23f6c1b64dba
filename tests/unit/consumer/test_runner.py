"""The consumer's readiness and its checks, without Kafka (the loop itself runs on the real
stack: tests/integration/test_consumer_service.py)."""

import threading

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError

from ecst.consumer.config import ConsumerConfig
from ecst.consumer.runner import Consumer, RebuildPolicy
from ecst.exceptions import ConfigError, StateStoreUnavailableError


def test_not_ready_while_the_state_store_is_unavailable_whatever_the_policy(store):
    consumer = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1",
                        config=ConsumerConfig(readiness="always"))
    assert consumer.ready() and consumer.not_ready_reason() is None
    consumer.health.lost(StateStoreUnavailableError("state store unavailable: connection refused"))
    assert not consumer.ready() and consumer.not_ready_reason() == "state store unavailable"
    assert consumer.metrics.value("ecst_state_store_up") == 0
    assert consumer.healthy()  # alive: a restart would not bring the store back
    consumer.health.back()
    assert consumer.ready() and consumer.metrics.value("ecst_state_store_up") == 1


def test_readiness_says_what_it_waits_for(store):
    snapshot = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1")
    assert snapshot.not_ready_reason() == "snapshot not applied"
    caught_up = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1",
                         config=ConsumerConfig(readiness="caught-up"))
    assert caught_up.not_ready_reason() == "end offsets of start-up not reached yet"


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 0}, "^batch_size: 0 is not a batch size"),
    ({"batch_size": 10**14}, "^batch_size: 100000000000000 is not a batch size"),
    ({"group_instance_id": "a/b"}, "^kafka.group_instance_id: 'a/b' is not a group instance id"),
])
def test_a_consumer_built_in_python_checks_its_config(store, changes, message):
    with pytest.raises(ConfigError, match=message):
        Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1", config=ConsumerConfig(**changes))


class _FlakyKafka:
    """Just enough of a KafkaConsumer for the loop: its first poll fails the way kafka-python 3.0
    fails while the broker restarts (seen in the fault suite's soak), and so does the next
    metadata request; then it answers with no records."""

    def __init__(self):
        self.tp = TopicPartition("t", 0)
        self.polls, self.topic_requests, self.seeks = 0, 0, []

    def partitions_for_topic(self, topic):
        return {0}

    def end_offsets(self, tps):
        return {tp: 10 for tp in tps}

    def beginning_offsets(self, tps):
        return {tp: 0 for tp in tps}

    def subscribe(self, topics, listener):
        self.listener = listener

    def assignment(self):
        return {self.tp}

    def poll(self, timeout_ms=0, max_records=None):
        self.polls += 1
        if self.polls == 1:
            raise KafkaConnectionError("111 ECONNREFUSED")
        return {}

    def topics(self):
        self.topic_requests += 1
        if self.topic_requests == 1:
            raise KafkaConnectionError("111 ECONNREFUSED")
        return {"t"}

    def seek(self, tp, offset):
        self.seeks.append((tp.partition, offset))

    def seek_to_beginning(self, tp):
        self.seeks.append((tp.partition, "beginning"))

    def position(self, tp, timeout_ms=None):
        return 7

    def highwater(self, tp):
        return 10

    def commit(self, offsets=None):
        pass

    def close(self, autocommit=False):
        pass


def test_a_broker_outage_met_by_poll_is_waited_out_and_reading_resumes_from_the_state(store, monkeypatch):
    store.apply([], {("t", 0): 7})  # the state holds offset 7
    kafka = _FlakyKafka()
    monkeypatch.setattr("ecst.kafka.consumer", lambda settings, **options: kafka)
    ups = []
    consumer = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1", policy=RebuildPolicy(
        until=lambda: ups.append(consumer.metrics.value("ecst_kafka_up")) or kafka.polls >= 3))
    consumer.run()
    assert kafka.topic_requests == 2  # asked again until Kafka answered
    assert kafka.seeks == [(0, 7)]  # then positioned at the state's offset: nothing read is skipped
    assert ups[0] == 1.0 and kafka.polls == 3


class _LateTopicKafka(_FlakyKafka):
    """A topic that exists only once its metadata was refreshed `late` times (a connector applied
    after the consumer started)."""

    def __init__(self, late):
        super().__init__()
        self.late = late
        self.polls = 1  # no broker outage here

    def partitions_for_topic(self, topic):
        return {0} if self.topic_requests >= self.late else None

    def topics(self):
        self.topic_requests += 1
        return {"t"} if self.topic_requests >= self.late else set()


def test_a_service_waits_for_a_missing_topic_saying_so_then_starts(store, monkeypatch):
    kafka = _LateTopicKafka(late=80)
    monkeypatch.setattr("ecst.kafka.consumer", lambda settings, **options: kafka)
    consumer = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1",
                        config=ConsumerConfig(readiness="always"),
                        policy=RebuildPolicy(until=lambda: kafka.polls >= 2))
    seen = []  # what /readyz and /metrics said during each wait
    monkeypatch.setattr(consumer, "_idle", lambda seconds, stop: seen.append(
        (seconds, consumer.not_ready_reason(), consumer.metrics.value("ecst_topic_present", topic="t"))))
    consumer.run(topic_timeout_s=None)  # a service: no timeout (80 looks would outlast 120 s)
    assert len(seen) == 79 and sum(s for s, _, _ in seen) > 120
    assert {(why, present) for _, why, present in seen} == {("waiting for topic t", 0.0)}
    assert consumer.not_ready_reason() is None  # the topic exists: `always` is ready
    assert consumer.metrics.value("ecst_topic_present", topic="t") == 1.0
    assert kafka.polls >= 2  # and the loop ran


def test_a_service_stopped_while_it_waits_for_a_topic_says_which(store, monkeypatch):
    kafka = _LateTopicKafka(late=10**6)
    monkeypatch.setattr("ecst.kafka.consumer", lambda settings, **options: kafka)
    consumer = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1")
    stop = threading.Event()
    monkeypatch.setattr(consumer, "_idle", lambda seconds, _stop: stop.set())
    stats = consumer.run(topic_timeout_s=None, stop=stop)
    assert stats.missing == ["t"] and stats.batches == 0 and kafka.polls == 1  # never polled

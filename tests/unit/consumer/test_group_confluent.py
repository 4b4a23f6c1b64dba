"""The confluent-kafka group reader's own logic, on a fake librdkafka consumer: assignment at the
stored offsets, batches as Records, librdkafka's errors in ecst's words, the missing extra. The
reader on a real broker: tests/integration/test_confluent_client.py."""

from __future__ import annotations

import sys
import threading

import confluent_kafka as ck
import pytest
from kafka.errors import FencedInstanceIdError, KafkaConnectionError

from ecst import kafka
from ecst.consumer import group_confluent as gc
from ecst.consumer.config import ConsumerConfig, TopicMapping, parse_consumer_config
from ecst.consumer.events import Record
from ecst.consumer.group import GroupReader
from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import StoreHealth
from ecst.consumer.readers import open_reader
from ecst.exceptions import ConfigError, KafkaUnavailableError, StateStoreUnavailableError

SETTINGS = kafka.KafkaSettings("127.0.0.1:1", client="confluent")
CONFIG = ConsumerConfig(topics=(TopicMapping("t"),), group_id="g", group_instance_id="g-0", batch_size=10)


class Err:
    """A confluent_kafka.KafkaError as the reader reads it."""

    def __init__(self, name, fatal=False, retriable=False):
        self._name, self._fatal, self._retriable = name, fatal, retriable

    def name(self):
        return self._name

    def str(self):
        return f"{self._name} happened"

    def fatal(self):
        return self._fatal

    def retriable(self):
        return self._retriable


class Msg:
    def __init__(self, topic, partition, offset, key=b"k", value=b"v", error=None,
                 timestamp=(ck.TIMESTAMP_NOT_AVAILABLE, -1)):
        self.args = (topic, partition, offset, key, value)
        self._error = error
        self._timestamp = timestamp

    def timestamp(self):
        return self._timestamp

    def error(self):
        return self._error

    def topic(self):
        return self.args[0]

    def partition(self):
        return self.args[1]

    def offset(self):
        return self.args[2]

    def key(self):
        return self.args[3]

    def value(self):
        return self.args[4]


class FakeConsumer:
    """Records what the reader asks of librdkafka's consumer."""

    def __init__(self, options, logger=None):
        self.options = options
        self.assigned: list[ck.TopicPartition] = []
        self.paused: list[tuple[str, int]] = []
        self.batches: list[list[Msg]] = []
        self.commits: list[list[tuple[str, int, int]]] = []
        self.commit_error: Exception | None = None

    def assign(self, tps):
        self.assigned = list(tps)

    def assignment(self):
        return [ck.TopicPartition(tp.topic, tp.partition) for tp in self.assigned]

    def pause(self, tps):
        self.paused += [(tp.topic, tp.partition) for tp in tps]

    def resume(self, tps):
        self.paused = [p for p in self.paused if p not in {(tp.topic, tp.partition) for tp in tps}]

    def consume(self, num_messages, timeout):
        return self.batches.pop(0) if self.batches else []

    def commit(self, offsets, asynchronous):
        assert asynchronous is False
        if self.commit_error is not None:
            raise self.commit_error
        self.commits.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))

    def position(self, tps):
        return [ck.TopicPartition(tp.topic, tp.partition, 7 if tp.partition == 0 else -1001) for tp in tps]

    def close(self):
        pass


class Store:
    def __init__(self, stored, up=True):
        self.stored, self.up = stored, up

    def stored_offsets(self):
        if not self.up:
            raise StateStoreUnavailableError("state store unavailable: gone")
        return dict(self.stored)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(gc.ck, "Consumer", FakeConsumer)


def reader(store, health=None):
    return gc.ConfluentGroupReader(SETTINGS, CONFIG, store, health or StoreHealth(Metrics()), client_id="c",
                                   poll_timeout_ms=10, alive=lambda: None)


def offsets(tps):
    return sorted((tp.topic, tp.partition, tp.offset) for tp in tps)


def test_the_options_are_kafka_pythons_in_librdkafkas_words():
    options = gc.reader_options(kafka.KafkaSettings("a:1, b:2", client="confluent"), CONFIG, "c")
    assert options["bootstrap.servers"] == "a:1,b:2"
    assert options["group.id"] == "g" and options["group.instance.id"] == "g-0"
    assert options["client.id"] == "c"
    assert options["enable.auto.commit"] is False and options["auto.offset.reset"] == "earliest"
    dynamic = gc.reader_options(SETTINGS, ConsumerConfig(group_instance_id=""), "c")
    assert "group.instance.id" not in dynamic


def test_librdkafka_takes_the_options_and_its_prefetch_is_bounded():
    options = gc.reader_options(SETTINGS, CONFIG, "c")
    assert options["queued.max.messages.kbytes"] == gc.QUEUED_KB < 65536  # librdkafka's default: 64 MiB
    ck.Consumer(options).close()  # an unknown or invalid property raises KafkaException here


def test_each_partition_starts_at_its_stored_offset_else_the_beginning():
    assert gc.start_offsets([("t", 0), ("t", 1)], {("t", 0): 42, ("u", 1): 5}) == [
        ("t", 0, 42), ("t", 1, gc.OFFSET_BEGINNING)]
    assert gc.OFFSET_BEGINNING == ck.OFFSET_BEGINNING
    assert gc.describe_start([("t", 1), ("t", 0)], {("t", 0): 42}) == "t[0]@42, t[1]@beginning"
    assert gc.known_offsets([("t", 0, 7), ("t", 1, ck.OFFSET_INVALID)]) == {("t", 0): 7}


def test_an_assignment_is_positioned_at_the_stored_offsets(fake):
    r = reader(Store({("t", 0): 42}))
    r._on_assign(r.consumer, [ck.TopicPartition("t", 0), ck.TopicPartition("t", 1)])
    assert offsets(r.consumer.assigned) == [("t", 0, 42), ("t", 1, ck.OFFSET_BEGINNING)]
    assert r.consumer.paused == []


def test_a_reader_alone_assigns_itself_the_partitions_at_the_given_offsets_without_a_group(fake):
    # (the fake consumer has no `subscribe`: a call would fail the test)
    r = reader(Store({("t", 0): 1}))
    r.assign([("t", 0), ("t", 1)], {("t", 0): 42})  # the offsets the loop read, not asked again
    assert offsets(r.consumer.assigned) == [("t", 0, 42), ("t", 1, ck.OFFSET_BEGINNING)]


def test_an_assignment_while_the_store_is_away_stays_paused_until_resume(fake):
    store, health = Store({("t", 0): 42}, up=False), StoreHealth(Metrics())
    r = reader(store, health)
    r._on_assign(r.consumer, [ck.TopicPartition("t", 0)])
    assert not health.up and r.consumer.paused == [("t", 0)]
    r._on_assign(r.consumer, [ck.TopicPartition("t", 0)])  # still away: not asked again
    assert r.consumer.paused == [("t", 0), ("t", 0)]
    r.resume({("t", 0): 43})
    assert offsets(r.consumer.assigned) == [("t", 0, 43)] and r.consumer.paused == []


def test_reposition_assigns_the_stored_offsets_again(fake):
    r = reader(Store({("t", 0): 5}))
    r._on_assign(r.consumer, [ck.TopicPartition("t", 0)])
    r.consumer.assigned[0].offset = 99  # read further, not applied
    r.reposition()
    assert offsets(r.consumer.assigned) == [("t", 0, 5)]
    r.reposition({("t", 0): 6})
    assert offsets(r.consumer.assigned) == [("t", 0, 6)]


def test_a_batch_is_records_and_transient_errors_are_left_to_librdkafka(fake):
    r = reader(Store({}))
    r.consumer.batches = [[Msg("t", 0, 3, b"k", b"v", timestamp=(ck.TIMESTAMP_CREATE_TIME, 1234)),
                           Msg("t", 0, -1, error=Err("_TRANSPORT")), Msg("t", 1, 9, None, None)]]
    assert r.poll() == [Record("t", 0, 3, b"k", b"v", 1234), Record("t", 1, 9, None, None)]
    assert r.poll() == []


def test_a_fatal_error_stops_the_loop_in_one_line(fake):
    r = reader(Store({}))
    r.consumer.batches = [[Msg("t", 0, 0, error=Err("_INVALID_ARG", fatal=True))]]
    with pytest.raises(KafkaUnavailableError,
                       match=r"^couldn't read from Kafka at 127.0.0.1:1: _INVALID_ARG "):
        r.poll()


def test_a_fenced_static_member_is_told_as_kafka_python_says_it(fake):
    r = reader(Store({}))
    r.consumer.batches = [[Msg("t", 0, 0, error=Err("_FENCED", fatal=True))]]
    with pytest.raises(FencedInstanceIdError):
        r.poll()


@pytest.mark.parametrize("error, expected", [
    (Err("_TRANSPORT"), KafkaConnectionError),
    (Err("NOT_COORDINATOR", retriable=True), KafkaConnectionError),
    (Err("_ALL_BROKERS_DOWN"), KafkaConnectionError),
    (Err("FENCED_INSTANCE_ID"), FencedInstanceIdError),
    (Err("_FATAL", fatal=True, retriable=True), KafkaUnavailableError),
    (Err("TOPIC_AUTHORIZATION_FAILED"), KafkaUnavailableError),
])
def test_errors_map_to_what_the_loop_waits_out_or_stops_on(error, expected):
    mapped = gc.mapped_error(error, SETTINGS, "read from")
    assert type(mapped) is expected
    if expected is KafkaUnavailableError:
        assert "\n" not in str(mapped) and "127.0.0.1:1" in str(mapped)
    if expected is KafkaConnectionError:
        assert mapped.retriable  # the loop waits it out (runner._wait_out_kafka)


def test_commits_follow_the_state_and_a_failed_one_is_only_logged(fake, caplog):
    r = reader(Store({}))
    r.commit({("t", 0): 4, ("t", 1): 2})
    assert r.consumer.commits == [[("t", 0, 4), ("t", 1, 2)]]
    r.consumer.commit_error = ck.KafkaException(ck.KafkaError(ck.KafkaError.REQUEST_TIMED_OUT))
    r.commit({("t", 0): 5})
    assert "Kafka offset commit failed (state is committed)" in caplog.text
    r.consumer.commit_error = ck.KafkaException(ck.KafkaError(ck.KafkaError.FENCED_INSTANCE_ID))
    with pytest.raises(FencedInstanceIdError):
        r.commit({("t", 0): 6})


def test_positions_are_the_known_positions_of_the_assigned_partitions(fake):
    from ecst.consumer.runner import progress

    r = reader(Store({}))
    r.consumer.assign([ck.TopicPartition("t", 0), ck.TopicPartition("t", 1)])
    assert r.positions() == {("t", 0): 7}  # t[1]'s position is not known yet
    assert progress({("t", 0): 3, ("t", 1): 4}, r.positions()) == {("t", 0): 7, ("t", 1): 4}
    assert progress({("t", 0): 9}, r.positions()) == {("t", 0): 9}


def test_idle_paused_pauses_every_assigned_partition(fake):
    r = reader(Store({}))
    r.consumer.assign([ck.TopicPartition("t", 0)])
    r.idle_paused(0.01, threading.Event())
    assert ("t", 0) in r.consumer.paused


def test_the_reader_is_the_one_the_settings_choose(fake, monkeypatch):
    monkeypatch.setattr(kafka, "consumer", lambda *args, **options: object())  # kafka-python's
    health = StoreHealth(Metrics())
    common = dict(client_id="c", poll_timeout_ms=10, alive=lambda: None)
    assert isinstance(open_reader(SETTINGS, CONFIG, Store({}), health, **common), gc.ConfluentGroupReader)
    default = open_reader(kafka.KafkaSettings("127.0.0.1:1"), CONFIG, Store({}), health, **common)
    assert type(default) is GroupReader


def test_the_client_is_a_setting_checked_like_the_others():
    assert kafka.KafkaSettings("a:1").client == "kafka-python"
    assert kafka.as_settings("a:1", "confluent") == SETTINGS.__class__("a:1", client="confluent")
    assert kafka.as_settings(SETTINGS, None) is SETTINGS
    with pytest.raises(ConfigError,
                       match=r"kafka.client: 'librdkafka' is not a Kafka client: use kafka-python or "
                             r"confluent"):
        kafka.KafkaSettings("a:1", client="librdkafka")
    config = parse_consumer_config({"kafka": {"client": "confluent"}}, "c.yaml")
    assert config.kafka_client == "confluent"
    assert parse_consumer_config({}, "c.yaml").kafka_client is None
    with pytest.raises(ConfigError, match=r"^c.yaml: kafka.client: 'rdkafka' is not a Kafka client"):
        parse_consumer_config({"kafka": {"client": "rdkafka"}}, "c.yaml")


def test_the_consumer_uses_the_configs_client(fake, store):
    from ecst.consumer.runner import Consumer

    consumer = Consumer(store, bootstrap_servers="127.0.0.1:1", config=CONFIG.with_(kafka_client="confluent"))
    assert consumer.kafka.client == "confluent"
    assert Consumer(store, bootstrap_servers="127.0.0.1:1").kafka.client == "kafka-python"


def test_a_chosen_client_not_installed_says_how_to_install_it(monkeypatch, store):
    from ecst.consumer.runner import Consumer

    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'ecst\[kafka-confluent\]'"):
        kafka.require_client(SETTINGS)
    kafka.require_client(kafka.KafkaSettings("a:1"))  # kafka-python needs nothing more
    with pytest.raises(ConfigError, match=r"pip install 'ecst\[kafka-confluent\]'"):
        Consumer(store, bootstrap_servers=SETTINGS)
    monkeypatch.setattr(gc, "ck", None)
    with pytest.raises(ConfigError, match=r"pip install 'ecst\[kafka-confluent\]'"):
        reader(Store({}))


class Watermarks(FakeConsumer):
    """Answers offsets requests with `errors` (KafkaError codes) first, then (0, 10)."""

    errors: list[int] = []

    def get_watermark_offsets(self, tp, timeout):
        if self.errors:
            raise ck.KafkaException(ck.KafkaError(self.errors.pop(0)))
        return 0, 10


def test_offsets_of_a_partition_with_no_leader_yet_are_asked_again(monkeypatch):
    monkeypatch.setattr(gc.ck, "Consumer", Watermarks)
    Watermarks.errors = [ck.KafkaError.NOT_LEADER_FOR_PARTITION, ck.KafkaError.LEADER_NOT_AVAILABLE]
    r = reader(Store({}))
    slept: list[float] = []
    r.sleep = slept.append
    assert r.offsets_at_start([("t", 0)]) == ({("t", 0): 0}, {("t", 0): 10})
    assert slept == [gc.LEADER_RETRY_S] * 2


def test_offsets_still_without_a_leader_at_the_deadline_are_an_error(monkeypatch):
    monkeypatch.setattr(gc.ck, "Consumer", Watermarks)
    Watermarks.errors = [ck.KafkaError.NOT_LEADER_FOR_PARTITION] * 1000
    r = reader(Store({}))
    clock = iter(range(0, 10**6, 5))  # each look at the clock is 5 s later
    monkeypatch.setattr(gc.time, "monotonic", lambda: next(clock))
    r.sleep = lambda _s: None
    with pytest.raises(KafkaUnavailableError, match="NOT_LEADER_FOR_PARTITION|Not leader"):
        r.offsets_at_start([("t", 0)])
    assert len(Watermarks.errors) == 1000 - gc.LEADER_WAIT_S // 5


def test_other_offsets_errors_are_not_asked_again(monkeypatch):
    monkeypatch.setattr(gc.ck, "Consumer", Watermarks)
    Watermarks.errors = [ck.KafkaError.TOPIC_AUTHORIZATION_FAILED, ck.KafkaError.NOT_LEADER_FOR_PARTITION]
    r = reader(Store({}))
    r.sleep = lambda _s: pytest.fail("asked again")
    with pytest.raises(KafkaUnavailableError):
        r.offsets_at_start([("t", 0)])

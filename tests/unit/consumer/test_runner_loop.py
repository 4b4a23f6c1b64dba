"""The consumer loop over a fake Kafka and a real SQLite state: batches, dead-lettering,
snapshot readiness, cold start, and a rebuild's policy."""

import pytest
from kafka import TopicPartition

from ecst.consumer import runner
from ecst.consumer.config import ConsumerConfig
from ecst.consumer.decoding import Decoder
from ecst.consumer.pg_decode import row_check
from ecst.consumer.runner import Consumer, RebuildPolicy
from ecst.exceptions import EventError
from tests.unit.consumer.envelopes import TOPIC, envelope, row
from tests.unit.consumer.fakekafka import FakeConsumer, FakeProducer, Message


@pytest.fixture(autouse=True, params=[True, False], ids=["overlap", "serial"])
def overlap(request, monkeypatch):
    """Every test runs with the stages overlapped (the default) and one after the other."""
    init = Consumer.__init__

    def with_overlap(self, *args, **kwargs):
        init(self, *args, **{"overlap": request.param, **kwargs})

    monkeypatch.setattr(Consumer, "__init__", with_overlap)
    return request.param


@pytest.fixture
def kafka(monkeypatch):
    """Install a fake Kafka: `kafka(records)` returns the consumer the loop will read."""
    made = {"producer": FakeProducer()}

    def install(records):
        made["consumer"] = FakeConsumer(TOPIC, records)
        monkeypatch.setattr("ecst.kafka.consumer", lambda settings, **options: made["consumer"])
        monkeypatch.setattr("ecst.kafka.producer", lambda settings, **options: made["producer"])
        monkeypatch.setattr("ecst.kafka.ensure_topic", lambda *args, **kwargs: None)
        return made["consumer"]

    install.producer = made["producer"]
    return install


def snapshot_then_changes():
    return [
        envelope("r", 1, 100, after=row(1), snapshot="first"),
        envelope("r", 2, 100, after=row(2, bio=None), snapshot="true"),
        envelope("r", 3, 100, after=row(3), snapshot="last"),
        envelope("u", 1, 200, before=row(1), after=row(1, bio="changed")),
        envelope("d", 2, 210, before=row(2, bio=None)),
    ]


def consumer(store, **options):
    return Consumer(store, [TOPIC], bootstrap_servers="127.0.0.1:1", **options)


def test_the_loop_applies_a_snapshot_and_changes_then_is_ready_and_stops_when_caught_up(store, kafka):
    fake = kafka(snapshot_then_changes())
    c = consumer(store, batch_size=2)  # three batches: the snapshot's last marker is in the second
    assert c.not_ready_reason() == "snapshot not applied"
    stats = c.run(until_caught_up=True)
    rows = {r["id"]: r for r in store.rows("users")}
    assert sorted(rows) == [1, 3] and rows[1]["bio"] == "changed" and rows[3]["bio"] == "hello"
    assert store.stored_offsets() == {(TOPIC, 0): 5}
    assert fake.commits[-1] == {(TOPIC, 0): 5}  # Kafka's offsets follow the state, for lag tools
    assert (stats.batches, stats.records, stats.dead_lettered) == (3, 5, 0)
    assert c.ready() and c.metrics.value("ecst_ready") == 1.0
    assert c.metrics.value("ecst_snapshot_complete", topic=TOPIC) == 1.0


def test_a_record_that_cannot_be_decoded_is_dead_lettered_and_its_offset_passed(store, kafka):
    records = snapshot_then_changes()
    records.insert(3, (b'{"id": 4}', b"not json"))
    kafka(records)
    stats = consumer(store, config=ConsumerConfig(dead_letter_topic="ecst.dlq")).run(until_caught_up=True)
    assert store.stored_offsets() == {(TOPIC, 0): 6} and stats.dead_lettered == 1
    [(topic, key, value, headers)] = kafka.producer.sent
    assert (topic, key, value) == ("ecst.dlq", b'{"id": 4}', b"not json")
    assert headers["ecst.stage"] == b"decode" and headers["ecst.source.offset"] == b"3"
    assert headers["ecst.source.topic"] == TOPIC.encode() and b"JSON" in headers["ecst.error"]
    assert sorted(r["id"] for r in store.rows("users")) == [1, 3]  # the good records all applied


def test_with_fail_fast_a_bad_record_stops_the_loop_and_the_state_keeps_the_last_good_batch(store, kafka):
    records = snapshot_then_changes()
    records.insert(3, (b'{"id": 4}', b"not json"))
    kafka(records)
    config = ConsumerConfig(dead_letter_topic="ecst.dlq", fail_fast=True)
    c = consumer(store, batch_size=3, config=config)
    unchanged = "the state is unchanged from the last good batch"
    with pytest.raises(EventError, match=rf"^{TOPIC}\[0\]@3: .*{unchanged}"):
        c.run(until_caught_up=True)
    assert store.stored_offsets() == {(TOPIC, 0): 3} and kafka.producer.sent == []
    assert {r["id"]: r["bio"] for r in store.rows("users")} == {1: "hello", 2: None, 3: "hello"}


def test_a_cold_start_that_meets_streamed_changes_but_no_markers_completes_the_copy(store, kafka):
    kafka(snapshot_then_changes()[3:])  # the snapshot's records were compacted away
    c = consumer(store)
    c.run(until_caught_up=True)
    assert c.snapshot_applied() and c.ready()


def test_a_cold_start_with_only_snapshot_rows_so_far_waits_for_the_markers(store, kafka):
    kafka(snapshot_then_changes()[1:2])  # a snapshot in progress: its `first` not read yet
    c = consumer(store)
    c.run(until_caught_up=True)
    assert not c.snapshot_applied() and c.not_ready_reason() == "snapshot not applied"


def test_a_rebuild_policy_filters_events_keeps_cold_starts_undecided_and_ends_the_run(store, kafka):
    kafka(snapshot_then_changes()[3:])
    turns = []
    policy = RebuildPolicy(accept=lambda e: e.key["id"] == 1, cold_start_completes=False,
                           until=lambda: turns.append(1) or len(turns) >= 2)
    c = consumer(store, policy=policy)
    stats = c.run()
    assert len(turns) == 2  # ended by the policy, not by a stop event
    assert [r["id"] for r in store.rows("users")] == [1] and stats.ignored == 1  # id 2 filtered
    assert not c.snapshot_applied()  # a snapshot rebuild decides completion from the snapshot


def test_a_rebuild_reads_alone_assigned_every_partition_from_its_stored_offsets(store, kafka):
    """A rebuild never joins a group (kafka-python 3.0.12 can leave a join unfinished: a
    blocking rebuild then waited 120 s for a snapshot it could not read, in CI)."""
    records = snapshot_then_changes()
    fake = kafka(records)
    consumer(store, policy=RebuildPolicy(reads_alone=True)).run(until_caught_up=True)
    assert fake.listener is None  # no subscription, so no rebalance
    assert fake.assigned == [TopicPartition(TOPIC, 0)]
    assert store.stored_offsets() == {(TOPIC, 0): len(records)}
    again = kafka(records)
    consumer(store, policy=RebuildPolicy(reads_alone=True)).run(until_caught_up=True)
    assert again.assigned == [TopicPartition(TOPIC, 0)] and again.next == len(records)
    assert again.polls_from == [len(records)]  # positioned at the stored offset, not the beginning


def test_integers_beyond_64_bits_are_dead_lettered_not_a_crash(store, kafka):
    """A malformed record (a timestamp or a key beyond 64 bits) is dead-lettered: at decode when
    its type cannot hold it, at apply when SQLite's driver cannot bind it (OverflowError)."""
    records = snapshot_then_changes()
    records.insert(3, envelope("u", 5, 150, after=row(5, last_login=10**30)))
    records.insert(4, envelope("u", 2**70, 160, after=row(2**70)))
    kafka(records)
    stats = consumer(store, config=ConsumerConfig(dead_letter_topic="ecst.dlq")).run(until_caught_up=True)
    assert stats.dead_lettered == 2 and store.stored_offsets() == {(TOPIC, 0): 7}
    stages = [headers["ecst.stage"] for _t, _k, _v, headers in kafka.producer.sent]
    assert stages == [b"decode", b"apply"]
    assert {r["id"]: r["bio"] for r in store.rows("users")} == {1: "changed", 3: "hello"}


def test_the_snapshot_target_is_read_after_records_sent_before_last_could_land(store, kafka, monkeypatch):
    records = snapshot_then_changes()
    fake = kafka(records[:3])  # `last` is in Kafka; a record sent before it lands meanwhile
    late = FakeConsumer(TOPIC, records[:4]).messages[3]
    waits = []

    def settle(seconds):
        waits.append(seconds)
        fake.messages.append(late)

    monkeypatch.setattr(runner, "_let_earlier_records_land", settle)
    c = consumer(store, batch_size=10)
    c.run(until_ready=True)
    assert waits == [runner.SNAPSHOT_SETTLE_S]  # once: the batch that held `last` (no timestamp)
    # the target counts the late record, so the copy is ready only once that record is applied too
    assert store.snapshot_states()[TOPIC].targets == {0: 4}
    assert store.stored_offsets() == {(TOPIC, 0): 4} and c.ready()
    assert {r["id"]: r["bio"] for r in store.rows("users")}[1] == "changed"


def test_the_settle_wait_is_what_is_left_of_it_since_last_was_sent(monkeypatch):
    monkeypatch.setattr(runner, "SNAPSHOT_SETTLE_S", 2.0)
    now = 1_000_000.0
    assert runner.settle_wait_s([int((now - 0.5) * 1000)], now) == pytest.approx(1.5)
    latest_of_two = [int((now - 30) * 1000), int((now - 1.25) * 1000)]
    assert runner.settle_wait_s(latest_of_two, now) == pytest.approx(0.75)
    assert runner.settle_wait_s([int((now - 30) * 1000)], now) == 0.0  # read long after: no wait
    assert runner.settle_wait_s([int((now + 600) * 1000)], now) == 2.0  # a clock ahead: never longer
    assert runner.settle_wait_s([int((now - 30) * 1000), None], now) == 2.0  # one unknown: all of it
    assert runner.settle_wait_s([], now) == 2.0


def test_a_records_kafka_timestamp_is_kept_when_it_has_one():
    decode = Decoder(ConsumerConfig())
    stamped = Message(TOPIC, 0, 0, None, None)
    stamped.timestamp = 1_700_000_000_123
    assert decode(stamped).record.timestamp == 1_700_000_000_123
    stamped.timestamp = -1  # kafka-python's "none"
    assert decode(stamped).record.timestamp is None
    assert decode(Message(TOPIC, 0, 0, None, None)).record.timestamp is None


def test_the_loop_dead_letters_a_deferred_row_python_cannot_decode_at_the_decode_stage(store, kafka):
    records = [envelope("r", n, 100, after=row(n), snapshot="true") for n in range(1, 6)]
    records.insert(2, envelope("r", 9, 100, after=row(9) | {"balance": "AAAAA"}, snapshot="true"))
    kafka(records)
    c = consumer(store, config=ConsumerConfig(dead_letter_topic="ecst.dlq"))
    c.decoder.defer = row_check  # as for a PostgreSQL state; SQLite's writer decodes them in Python
    stats = c.run(until_caught_up=True)
    assert stats.dead_lettered == 1 and store.stored_offsets() == {(TOPIC, 0): 6}
    [(_topic, _key, _value, headers)] = kafka.producer.sent
    assert headers["ecst.stage"] == b"decode" and headers["ecst.source.offset"] == b"2"
    assert headers["ecst.error"].startswith(b"column 'balance'")  # as decode says it, no location
    assert sorted(r["id"] for r in store.rows("users")) == [1, 2, 3, 4, 5]


def test_with_fail_fast_a_deferred_row_python_cannot_decode_stops_the_loop(store, kafka):
    records = [envelope("r", n, 100, after=row(n), snapshot="true") for n in range(1, 4)]
    records.insert(1, envelope("r", 9, 100, after=row(9) | {"balance": "AAAAA"}, snapshot="true"))
    kafka(records)
    c = consumer(store, config=ConsumerConfig(dead_letter_topic="ecst.dlq", fail_fast=True))
    c.decoder.defer = row_check
    unchanged = "the state is unchanged from the last good batch"
    with pytest.raises(EventError, match=rf"^{TOPIC}\[0\]@1: column 'balance'.*{unchanged}"):
        c.run(until_caught_up=True)
    assert store.stored_offsets() == {} and kafka.producer.sent == []

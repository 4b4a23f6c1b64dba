"""The overlapped loop (poll and decode batch N+1 while batch N is applied on a worker thread)
keeps the serial loop's guarantees: Kafka offsets are committed only after the state holds
them, a failed batch drops the batch polled meanwhile and the loop reads on from the stored
offsets, a rebalance waits for the batch in flight, and the run's end finishes it. Every test
runs both ways (overlap and serial); the apply is slowed down so that a batch is still in
flight when the loop polls the next one."""

import threading
import time

import pytest

from ecst.consumer.config import ConsumerConfig
from ecst.consumer.runner import Consumer
from ecst.consumer.store import StaleStateError
from ecst.exceptions import StateStoreUnavailableError
from tests.unit.consumer.envelopes import TOPIC, envelope, row
from tests.unit.consumer.fakekafka import FakeConsumer, FakeProducer

KEY = (TOPIC, 0)
APPLY_S = 0.15  # each apply's extra duration: long enough for the loop to poll meanwhile


def creates(n):
    """`n` records, each creating user `offset`: the state holds one row per applied record."""
    return [envelope("c", i, 100 + i, after=row(i)) for i in range(n)]


class Watched:
    """Wraps `store.apply`: records each call's offsets, whether an apply is running, and can
    fail chosen calls."""

    def __init__(self, store, monkeypatch, fail=None):
        self.store = store
        self.real = store.apply
        self.running = threading.Event()
        self.attempts: list[int] = []  # the next offset of each apply called
        self.applied: list[int] = []  # ... of each apply that committed
        self.fail = fail or {}  # attempt number (1-based) -> exception to raise instead
        monkeypatch.setattr(store, "apply", self.apply)

    def apply(self, events, next_offsets, snapshots=None):
        self.running.set()
        try:
            self.attempts.append(next_offsets.get(KEY, -1))
            time.sleep(APPLY_S)
            error = self.fail.pop(len(self.attempts), None)
            if error is not None:
                raise error
            stats = self.real(events, next_offsets, snapshots)
            self.applied.append(next_offsets.get(KEY, -1))
            return stats
        finally:
            self.running.clear()


class Kafka(FakeConsumer):
    """The fake consumer, checking at each Kafka commit that the state already holds the
    committed offsets and the rows before them, and noting whether an apply runs at each poll."""

    def __init__(self, records, store, watched):
        super().__init__(TOPIC, records)
        self.store = store
        self.watched = watched
        self.polls = 0
        self.polled_while_applying = 0
        self.seeks: list[int] = []
        self.ahead: list[str] = []  # every commit that was ahead of the state
        self.on_poll = None  # called with the poll's number, before it reads
        self.after_poll = None  # called with the poll's number, after it read

    def poll(self, timeout_ms=0, max_records=None):
        self.polls += 1
        if self.watched.running.is_set():
            self.polled_while_applying += 1
        if self.on_poll is not None:
            self.on_poll(self.polls)
        polled = super().poll(timeout_ms, max_records)
        if self.after_poll is not None:
            self.after_poll(self.polls)
        return polled

    def seek(self, tp, offset):
        self.seeks.append(offset)
        super().seek(tp, offset)

    def commit(self, offsets=None):
        stored = self.store.stored_offsets().get(KEY, 0)
        rows = self.store.count("users")
        for o in offsets.values():
            if o.offset > stored or rows < o.offset:
                self.ahead.append(f"Kafka commit {o.offset}: state offset {stored}, {rows} rows")
        super().commit(offsets)


@pytest.fixture(params=[True, False], ids=["overlap", "serial"])
def overlap(request):
    return request.param


@pytest.fixture
def setup(store, monkeypatch):
    """`setup(records, fail=...)`: install the fake Kafka over a watched store."""

    def install(records, fail=None):
        watched = Watched(store, monkeypatch, fail)
        fake = Kafka(records, store, watched)
        monkeypatch.setattr("ecst.kafka.consumer", lambda settings, **options: fake)
        monkeypatch.setattr("ecst.kafka.producer", lambda settings, **options: FakeProducer())
        monkeypatch.setattr("ecst.kafka.ensure_topic", lambda *args, **kwargs: None)
        return fake, watched

    return install


def consumer(store, overlap, **options):
    return Consumer(store, [TOPIC], bootstrap_servers="127.0.0.1:1", batch_size=3, overlap=overlap, **options)


def test_kafka_offsets_are_committed_only_once_the_state_holds_them(store, setup, overlap, monkeypatch):
    # A static member also commits its positions when idle (to learn it was fenced): always, here;
    # and every batch's offsets are committed at once (not spaced out), each checked against the state.
    monkeypatch.setattr("ecst.consumer.group.MEMBERSHIP_CHECK_S", 0.0)
    monkeypatch.setattr("ecst.consumer.runner.KAFKA_COMMIT_EVERY_S", 0.0)
    fake, watched = setup(creates(12))
    stats = consumer(store, overlap, config=ConsumerConfig(group_instance_id="static-0")).run(
        until_caught_up=True)
    assert fake.ahead == []
    assert watched.applied == [3, 6, 9, 12] and stats.batches == 4
    assert fake.commits and fake.commits[-1] == {KEY: 12} and store.stored_offsets() == {KEY: 12}
    assert store.count("users") == 12
    # the stages did overlap (or, serial, did not): a poll ran while a batch was applied
    assert (fake.polled_while_applying > 0) is overlap


def test_kafka_commits_are_spaced_out_and_the_last_offsets_are_committed_when_the_run_ends(
        store, setup, overlap, monkeypatch):
    monkeypatch.setattr("ecst.consumer.runner.KAFKA_COMMIT_EVERY_S", 3600.0)
    fake, watched = setup(creates(12))
    consumer(store, overlap).run(until_caught_up=True)
    assert watched.applied == [3, 6, 9, 12]
    # the first batch's offsets at once, the others held back until the run's end
    assert fake.commits == [{KEY: 3}, {KEY: 12}] and fake.ahead == []


def test_offsets_held_back_are_committed_once_due_when_the_stream_goes_quiet(store, setup, monkeypatch):
    """Lag tools must not see a lag that is not there: the last batch's offsets reach Kafka within
    KAFKA_COMMIT_EVERY_S though no batch follows it (not only when the run ends)."""
    monkeypatch.setattr("ecst.consumer.runner.KAFKA_COMMIT_EVERY_S", 0.3)
    fake, watched = setup(creates(12))
    stop = threading.Event()
    started = time.monotonic()
    committed_while_running = []

    def look(n):
        if fake.commits and fake.commits[-1] == {KEY: 12}:
            committed_while_running.append(n)
            stop.set()
        elif time.monotonic() - started > 5:
            stop.set()  # the end of the run commits them anyway: too late for this test

    fake.on_poll = look
    consumer(store, True).run(stop=stop)
    assert watched.applied == [3, 6, 9, 12] and committed_while_running and fake.ahead == []


def test_offsets_held_back_across_a_rebalance_are_not_committed(store, setup, monkeypatch):
    """After a rebalance a partition may have a new owner: offsets this member held back for it
    (older than the new owner's) are dropped, not committed later over the new owner's."""
    monkeypatch.setattr("ecst.consumer.runner.KAFKA_COMMIT_EVERY_S", 3600.0)
    setup(creates(3))
    c = consumer(store, True)
    group = Committed()
    c._commit_to_kafka(group, {KEY: 3})  # the first: at once
    c._commit_to_kafka(group, {KEY: 6, (TOPIC, 1): 2})  # held back
    c._wait_for_apply()  # a rebalance begins (partitions revoked) ...
    c._assigned()  # ... and ends
    c._commit_to_kafka(group, {(TOPIC, 1): 5})  # a batch settled after it
    c._flush_kafka_commit(group)
    assert group.commits == [{KEY: 3}, {(TOPIC, 1): 5}]


class Committed:
    """A reader recording the offsets committed to Kafka."""

    def __init__(self) -> None:
        self.commits: list[dict] = []

    def commit(self, offsets):
        self.commits.append(dict(offsets))


def test_streamed_batches_do_not_read_the_snapshot_states_at_every_turn(store, setup, monkeypatch):
    """Without snapshot markers in the batches and none pending, the states are read at the first
    turn and then every SNAPSHOT_READ_EVERY_S, not once per batch (5 reads here when they were)."""
    monkeypatch.setattr("ecst.consumer.runner.SNAPSHOT_READ_EVERY_S", 3600.0)
    setup(creates(12))
    reads = []
    real = store.snapshot_states
    monkeypatch.setattr(store, "snapshot_states", lambda: reads.append(1) or real())
    stats = consumer(store, True).run(until_caught_up=True)
    # the first turn's read, and the one after the cold start's decision (no stored offsets at start)
    assert stats.batches == 4 and len(reads) == 2


@pytest.mark.parametrize("error", [StateStoreUnavailableError("state store unavailable: gone"),
                                   StaleStateError("swapped by a rebuild")], ids=["outage", "stale"])
def test_a_failed_batch_drops_the_batch_polled_meanwhile_and_reads_on_from_the_stored_offsets(
        store, setup, overlap, error):
    fake, watched = setup(creates(12), fail={2: error})  # the second batch (offsets 3-5) fails once
    stats = consumer(store, overlap).run(until_caught_up=True)
    assert watched.attempts == [3, 6, 6, 9, 12]  # the batch after the failed one was never applied
    assert watched.applied == [3, 6, 9, 12] and stats.records == 12
    assert fake.seeks[-1] == 3  # positioned again at the offset the store held
    assert store.count("users") == 12 and store.stored_offsets() == {KEY: 12} and fake.ahead == []


def test_a_rebalance_waits_for_the_batch_in_flight_before_positioning_at_the_stored_offsets(
        store, setup, overlap):
    fake, watched = setup(creates(12))
    during: list[bool] = []  # was a batch being applied when each listener call returned?

    def rebalance(n):
        if n == 3:  # the second batch (offsets 3-5) is in flight with overlap
            fake.listener.on_partitions_revoked([fake.tp])
            during.append(watched.running.is_set())
            fake.listener.on_partitions_assigned([fake.tp])  # seeks to the stored offsets
            during.append(watched.running.is_set())

    fake.on_poll = rebalance
    consumer(store, overlap).run(until_caught_up=True)
    assert during == [False, False]
    assert fake.seeks[-1] == 6  # the offsets stored by the batch that was in flight
    assert watched.attempts == [3, 6, 9, 12]  # nothing read or applied twice
    assert store.count("users") == 12 and store.stored_offsets() == {KEY: 12} and fake.ahead == []


def test_a_batch_read_across_a_rebalance_is_read_again_from_the_stored_offsets(store, setup, overlap):
    """kafka-python runs the listener on its own thread: a rebalance may begin and end after a
    poll read its records and before the loop hands them over. The assignment then positioned
    the partitions behind them (at the offsets the batch in flight stored), so the loop drops
    them and reads on from the stored offsets: nothing is applied twice."""
    fake, watched = setup(creates(12))

    def rebalance(n):
        if n == 3:  # read 6-8 while 3-5 was in flight (overlap); then the whole rebalance
            fake.listener.on_partitions_revoked([fake.tp])
            fake.listener.on_partitions_assigned([fake.tp])  # positions at 6 again

    fake.after_poll = rebalance
    consumer(store, overlap).run(until_caught_up=True)
    assert watched.attempts == [3, 6, 9, 12]
    assert store.count("users") == 12 and store.stored_offsets() == {KEY: 12} and fake.ahead == []


def test_a_stopped_run_finishes_the_batch_in_flight_before_it_returns(store, setup, overlap):
    fake, watched = setup(creates(12))
    stop = threading.Event()
    fake.on_poll = lambda n: n == 2 and stop.set()  # a SIGTERM while the second batch is read
    stats = consumer(store, overlap).run(stop=stop)
    assert not watched.running.is_set()
    assert watched.applied == [3, 6] and stats.batches == 2
    assert store.stored_offsets() == {KEY: 6} and fake.commits[-1] == {KEY: 6} and fake.ahead == []
    assert store.count("users") == 6

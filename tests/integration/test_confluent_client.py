"""The consumer on the optional confluent-kafka client (`kafka.client: confluent`), on the real
stack: snapshot and live changes to an exact copy, a stop mid-stream and a rebalance between two
members losing nothing, and every assignment positioned at the offsets the state store holds,
whatever offsets Kafka holds for the group."""

import threading

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from ecst import source
from ecst.consumer.group_confluent import ConfluentGroupReader
from ecst.consumer.store import StateStore
from tests.integration.test_pipeline import write_until

CONFLUENT = {"kafka_client": "confluent"}


def test_snapshot_and_live_changes_reach_an_exact_copy_through_confluent_kafka(capture, tmp_path):
    capture.create(rows=3000)
    assert capture.apply() == "created"
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        consumer = capture.consumer(store, **CONFLUENT)
        consumer.run(until_ready=True)
        assert consumer.ready()
        snap = capture.compare(store)  # every column of every row
        assert snap.matches, snap.summary()
        assert snap.state_rows == 3000

        # stopped after its first streamed batch, then a new consumer goes on from the stored offsets
        stop = threading.Event()
        live = capture.consumer(store, batch_size=20, **CONFLUENT)
        thread = threading.Thread(target=live.run, kwargs={"stop": stop, "on_batch": lambda _: stop.set()})
        thread.start()
        first = source.write_changes(capture.conn, capture.table, inserts=100, updates=150, deletes=50,
                                     seed=2)
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert 0 < live.stats.records < first.inserted + first.updated + first.deleted  # mid-stream
        more = source.write_changes(capture.conn, capture.table, inserts=50, updates=50, deletes=20, seed=3)
        result = capture.converge(store, **CONFLUENT)
        assert result.matches, result.summary()
        assert result.state_rows == 3000 + first.inserted + more.inserted - first.deleted - more.deleted
    finally:
        store.close()


def _commit_group_offsets(capture, group, offset_of):
    """Set the group's committed Kafka offsets (what lag tools read) for every partition."""
    c = KafkaConsumer(bootstrap_servers=capture.stack.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(capture.topic, p) for p in sorted(c.partitions_for_topic(capture.topic))]
        ends = c.end_offsets(tps)
        c.commit({tp: OffsetAndMetadata(offset_of(ends[tp]), "", -1) for tp in tps})
    finally:
        c.close()


def _run_within(consumer, seconds):
    """`run(until_caught_up=True)`, failing (not hanging) if it has not caught up in `seconds`."""
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, kwargs={"until_caught_up": True, "stop": stop})
    thread.start()
    thread.join(timeout=seconds)
    caught_up = not thread.is_alive()
    stop.set()
    thread.join(timeout=30)
    assert caught_up, f"not caught up within {seconds} s: {consumer.stats}"


def test_every_assignment_starts_at_the_stored_offsets_not_kafkas(capture, tmp_path):
    capture.create(rows=800)
    capture.apply()
    group = f"seek-{capture.uid}"
    full = StateStore(f"sqlite:///{tmp_path / 'full.db'}")
    empty = StateStore(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        capture.consumer(full, group=group, **CONFLUENT).run(until_ready=True)
        stored = full.stored_offsets()
        assert len(stored) == 3 and sum(stored.values()) >= 800

        # Kafka's offsets of the group at the end: a fresh state is still read from the beginning
        _commit_group_offsets(capture, group, lambda end: end)
        fresh = capture.consumer(empty, group=group, **CONFLUENT)
        _run_within(fresh, 120)
        assert fresh.stats.records == sum(stored.values())
        result = capture.compare(empty)
        assert result.matches, result.summary()

        # Kafka's offsets of the group at the beginning: a full state reads nothing again
        _commit_group_offsets(capture, group, lambda end: 0)
        again = capture.consumer(full, group=group, **CONFLUENT)
        _run_within(again, 120)
        assert again.stats.records == 0
        assert full.stored_offsets() == stored
    finally:
        full.close()
        empty.close()


def test_rebalances_between_two_confluent_members_lose_nothing(capture, stack):
    """A second member joins mid-stream and the first leaves; both write one Postgres state."""
    capture.create(rows=2000)
    capture.apply()
    url, drop = stack.new_database(f"rbc_{capture.uid}")
    stores = [StateStore(url), StateStore(url)]
    try:
        group = f"rbc-{capture.uid}"
        first_stop, second_stop = threading.Event(), threading.Event()
        first = capture.consumer(stores[0], group=group, batch_size=100, **CONFLUENT)
        second = capture.consumer(stores[1], group=group, batch_size=100, **CONFLUENT)
        t1 = threading.Thread(target=first.run, kwargs={"stop": first_stop})
        t1.start()
        seed = iter(range(10, 1000))
        source.write_changes(capture.conn, capture.table, inserts=100, updates=200, deletes=50, seed=4)
        write_until(capture, lambda: first.stats.batches > 0, seed)
        t2 = threading.Thread(target=second.run, kwargs={"stop": second_stop})
        t2.start()  # joins: the group rebalances, each assignment at the stored offsets
        write_until(capture, lambda: second.stats.batches > 0, seed)
        first_stop.set()  # leaves: its partitions move to the second member
        t1.join(timeout=60)
        before = second.stats.records
        write_until(capture, lambda: second.stats.records > before, seed)
        second_stop.set()
        t2.join(timeout=60)
        assert not t1.is_alive() and not t2.is_alive()
        assert first.stats.batches > 0 and second.stats.batches > 0
        result = capture.converge(stores[1], **CONFLUENT)
        assert result.matches, result.summary()
    finally:
        for s in stores:
            s.close()
        drop()


def test_reposition_and_resume_go_back_to_the_stored_offsets(capture, tmp_path):
    """The outage paths on librdkafka: partitions read past the stored offsets are assigned at
    them again (reposition), and paused partitions are positioned and resumed (resume)."""
    from ecst import kafka
    from ecst.consumer.metrics import Metrics
    from ecst.consumer.outage import StoreHealth

    capture.create(rows=300)
    capture.apply()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    capture.consumer(store, **CONFLUENT).run(until_ready=True)
    config = capture.consumer(store, group=f"rp-{capture.uid}", batch_size=50, **CONFLUENT).config
    settings = kafka.KafkaSettings(capture.stack.bootstrap, client="confluent")
    reader = ConfluentGroupReader(settings, config, store, StoreHealth(Metrics()), client_id="t",
                                  poll_timeout_ms=500, alive=lambda: None)
    try:
        parts, missing = reader.find_topics()
        assert not missing
        reader.subscribe()
        early = []
        for _ in range(60):  # until the group has formed and assigned every partition
            early += reader.poll()
            if len(reader.consumer.assignment()) == len(parts):
                break
        early += reader.poll()
        assert len(reader.consumer.assignment()) == len(parts)
        assert early == []  # assigned at the stored offsets: the end, nothing new since
        rewound = {(t, p): 0 for t, p in parts}  # as if the state held nothing yet
        reader.reposition(rewound)
        seen = _read(reader, 300)
        assert min(r.offset for r in seen) == 0
        reader.idle_paused(1.0, threading.Event())
        assert _read(reader, 1, attempts=3) == []  # paused
        reader.resume(rewound)
        assert min(r.offset for r in _read(reader, 300)) == 0
    finally:
        reader.close()
        store.close()


def _read(reader, at_least, attempts=40):
    out = []
    for _ in range(attempts):
        out += reader.poll()
        if len(out) >= at_least:
            break
    return out

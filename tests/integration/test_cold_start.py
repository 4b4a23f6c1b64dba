"""A cold start (a new service, or a lost state database) is a replay of the topic into an empty
state: /readyz stays not-ready until the first full copy is in place. On a compacted topic the
snapshot's first/last markers may be gone (their keys changed since): reaching the end offsets of
the start is then the proof. Records are produced here in Debezium's format, on the real broker."""

import threading
import uuid

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from ecst.consumer.runner import Consumer
from ecst.consumer.store import StateStore
from ecst.demo import delete_topics
from tests.unit.consumer.envelopes import envelope, row


def produce(bootstrap, topic, events, create=True):
    if create:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=-1)])
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for id_, snapshot, lsn in events:
        op = "u" if snapshot == "false" else "r"
        key, value = envelope(op, id_, lsn, after=row(id_), snapshot=snapshot, table="users")
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def run_until_ready(consumer, timeout_s=60):
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, kwargs={"until_ready": True, "stop": stop})
    thread.start()
    thread.join(timeout_s)
    stop.set()
    thread.join()
    return consumer.ready()


def test_a_cold_start_on_a_topic_whose_markers_were_compacted_away_becomes_ready(stack, tmp_path):
    topic = f"cold{uuid.uuid4().hex[:8]}.public.users"
    # what compaction leaves: snapshot rows whose first/last records were replaced by updates
    snapshot_rows = [(i, "true", 100) for i in range(2, 50)]
    produce(stack.bootstrap, topic, snapshot_rows + [(1, "false", 200), (50, "false", 210)])
    try:
        store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        consumer = Consumer(store, [topic], bootstrap_servers=stack.bootstrap, group_id=f"g-{topic}")
        assert run_until_ready(consumer)
        assert len(store.rows("users")) == 50
        store.close()
    finally:
        delete_topics(stack.bootstrap, [topic])


def test_a_cold_start_during_a_snapshot_waits_for_its_last_record(stack, tmp_path):
    topic = f"cold{uuid.uuid4().hex[:8]}.public.users"
    produce(stack.bootstrap, topic, [(1, "first", 100)] + [(i, "true", 100) for i in range(2, 30)])
    try:
        store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        consumer = Consumer(store, [topic], bootstrap_servers=stack.bootstrap, group_id=f"g-{topic}")
        consumer.run(until_caught_up=True)
        assert not consumer.ready()  # caught up, but the snapshot is still being written
        produce(stack.bootstrap, topic, [(30, "last", 100)], create=False)
        assert run_until_ready(consumer)
        assert len(store.rows("users")) == 30
        store.close()
    finally:
        delete_topics(stack.bootstrap, [topic])


def test_a_cold_start_that_sees_only_snapshot_rows_does_not_call_them_complete(stack, tmp_path):
    # the `first` marker may sit in a partition whose records are not visible yet: rows without
    # markers and without any streamed change are a snapshot in progress, not a compacted topic
    topic = f"cold{uuid.uuid4().hex[:8]}.public.users"
    produce(stack.bootstrap, topic, [(i, "true", 100) for i in range(2, 30)])
    try:
        store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        consumer = Consumer(store, [topic], bootstrap_servers=stack.bootstrap, group_id=f"g-{topic}")
        consumer.run(until_caught_up=True)
        assert not consumer.ready()
        produce(stack.bootstrap, topic, [(1, "first", 100), (30, "last", 100)], create=False)
        assert run_until_ready(consumer)
        assert len(store.rows("users")) == 30
        store.close()
    finally:
        delete_topics(stack.bootstrap, [topic])

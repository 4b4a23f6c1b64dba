"""End to end on the real stack: snapshot of rows that existed before the connector, then live
changes, applied to the private state and compared row by row, every column."""

import json
import threading
import time

import pytest

from ecst import source


def test_existing_rows_then_live_changes_reach_the_private_state(capture, state_store):
    # the producer had 3000 users before any connector existed
    capture.create(rows=3000)
    assert capture.apply() == "created"

    # initial snapshot: the consumer is ready once every snapshot record is applied
    consumer = capture.consumer(state_store)
    consumer.run(until_ready=True)
    assert consumer.ready()
    snap = capture.compare(state_store)
    assert snap.matches, snap.summary()
    assert snap.state_rows == 3000

    # live inserts, updates and deletes arrive and the state equals the producer exactly
    done = source.write_changes(capture.conn, capture.table, inserts=150, updates=200, deletes=80, seed=1)
    result = capture.converge(state_store)
    assert result.matches, result.summary()
    assert result.state_rows == 3000 + done.inserted - done.deleted


def test_consumer_stopped_mid_stream_resumes_without_skipping(capture, tmp_path):
    from ecst.consumer.store import StateStore

    capture.create(rows=500)
    capture.apply()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    capture.consumer(store).run(until_ready=True)

    # changes stream while the consumer runs; it is stopped after its first streamed batch
    stop = threading.Event()
    applied = []

    def on_batch(stats):
        applied.append(sum(stats.by_op.values()))
        stop.set()

    live = capture.consumer(store, batch_size=20)
    thread = threading.Thread(target=live.run, kwargs={"stop": stop, "on_batch": on_batch})
    thread.start()
    first = source.write_changes(capture.conn, capture.table, inserts=100, updates=150, deletes=50, seed=2)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert 0 < sum(applied) < first.inserted + first.updated + first.deleted  # really mid-stream

    # more changes while it is down, then a new consumer process takes over from stored offsets
    source.write_changes(capture.conn, capture.table, inserts=50, updates=50, deletes=20, seed=3)
    result = capture.converge(store)
    assert result.matches, result.summary()
    store.close()


def write_until(capture, condition, seeds, timeout_s=90):
    """Small rounds of producer writes until `condition()` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        source.write_changes(capture.conn, capture.table, inserts=10, updates=20, deletes=5, seed=next(seeds))
        time.sleep(0.5)


def test_rebalances_between_two_members_of_a_group_lose_nothing(capture, stack):
    """A second member joins mid-stream and the first leaves: partitions move between them
    while both write the same Postgres state store; the state still ends equal to the source."""
    from ecst.consumer.store import StateStore

    capture.create(rows=2000)
    capture.apply()
    url, drop = stack.new_database(f"rb_{capture.uid}")
    stores = [StateStore(url), StateStore(url)]
    try:
        group = f"rb-{capture.uid}"
        first_stop, second_stop = threading.Event(), threading.Event()
        first = capture.consumer(stores[0], group=group, batch_size=100)
        second = capture.consumer(stores[1], group=group, batch_size=100)
        t1 = threading.Thread(target=first.run, kwargs={"stop": first_stop})
        t1.start()
        seed = iter(range(10, 1000))
        source.write_changes(capture.conn, capture.table, inserts=100, updates=200, deletes=50, seed=4)
        write_until(capture, lambda: first.stats.batches > 0, seed)  # the first member is working
        t2 = threading.Thread(target=second.run, kwargs={"stop": second_stop})
        t2.start()  # joins: the group rebalances
        # keep writing until the second member got partitions and applied changes from them
        write_until(capture, lambda: second.stats.batches > 0, seed)
        first_stop.set()  # leaves: its partitions move to the second member
        t1.join(timeout=60)
        before = second.stats.records
        write_until(capture, lambda: second.stats.records > before, seed)
        second_stop.set()
        t2.join(timeout=60)
        assert not t1.is_alive() and not t2.is_alive()
        assert first.stats.batches > 0 and second.stats.batches > 0
        result = capture.converge(stores[1])
        assert result.matches, result.summary()
    finally:
        for s in stores:
            s.close()
        drop()


def test_a_column_added_in_the_source_reaches_a_mirrored_table_and_is_ignored_by_a_mapping(
        capture, tmp_path):
    from ecst.consumer.config import TopicMapping
    from ecst.consumer.store import StateStore

    capture.create(rows=100)
    capture.apply()
    mirror = StateStore(f"sqlite:///{tmp_path / 'mirror.db'}")
    mapped = StateStore(f"sqlite:///{tmp_path / 'mapped.db'}")
    mapping = (TopicMapping(capture.topic, table="people", columns={"id": "id", "email": "mail"}),)
    capture.consumer(mirror).run(until_ready=True)
    capture.consumer(mapped, topics=mapping).run(until_ready=True)

    # the producer adds a column and writes to it
    capture.conn.execute(f'ALTER TABLE "{capture.table}" ADD COLUMN nickname text')
    capture.conn.execute(f"UPDATE \"{capture.table}\" SET nickname = 'n' || id WHERE id <= 10")
    result = capture.converge(mirror)
    assert result.matches, result.summary()
    assert {r["id"]: r["nickname"] for r in mirror.rows(capture.table)}[7] == "n7"

    capture.consumer(mapped, topics=mapping).run(until_caught_up=True)
    rows = {r["id"]: r for r in mapped.rows("people")}
    assert set(rows[7]) == {"id", "mail"} and rows[7]["mail"] == "user7@example.com"
    mirror.close()
    mapped.close()


@pytest.mark.parametrize("deletes", ["rewrite", "tombstone"])
def test_flattened_events_from_the_extract_new_record_state_smt(capture, tmp_path, deletes):
    """The connector flattens events itself (ExtractNewRecordState); deletes arrive as rows with
    __deleted=true (rewrite) or as Kafka tombstones only (tombstone, with `tombstones: delete`)."""
    from ecst.connectors.definition import parse_definition
    from ecst.consumer.config import TopicMapping
    from ecst.consumer.store import StateStore

    capture.doc["config"].update({
        "transforms": "unwrap",
        "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
        "transforms.unwrap.delete.tombstone.handling.mode": deletes,
        "transforms.unwrap.add.fields": "op,lsn,sequence,table,source.ts_ms,source.snapshot",
    })
    capture.definition = parse_definition(capture.doc, environ={})
    capture.create(rows=300)
    capture.apply()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    topics = (TopicMapping(capture.topic, tombstones="delete" if deletes == "tombstone" else "ignore"),)
    capture.consumer(store, topics=topics).run(until_ready=True)
    source.write_changes(capture.conn, capture.table, inserts=30, updates=60, deletes=40, seed=8)
    result = capture.converge(store, topics=topics)
    assert result.matches, result.summary()
    assert result.state_rows == 300 + 30 - 40
    store.close()


def test_a_delete_the_log_cleaner_removed_while_the_consumer_was_down_still_deletes(capture, tmp_path):
    # Compaction keeps a deleted key's Kafka tombstone and drops its delete event. A consumer that
    # applied the row, then lagged behind the log cleaner, meets only the tombstone: it must delete.
    from kafka import KafkaConsumer

    from ecst.consumer.store import StateStore
    from tests.integration.test_rebootstrap import compact_quickly

    compact_quickly(capture)
    capture.create(rows=200)
    capture.apply()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    capture.consumer(store).run(until_ready=True)
    capture.conn.execute(f'DELETE FROM "{capture.table}" WHERE id <= 20')  # while the consumer is down

    def delete_events_left():
        reader = KafkaConsumer(capture.topic, bootstrap_servers=capture.stack.bootstrap,
                               auto_offset_reset="earliest", consumer_timeout_ms=3000)
        left, tombstones = set(), set()
        for m in reader:
            key = json.loads(m.key)["payload"]["id"]
            if key <= 20:
                (tombstones if m.value is None else left).add((key, json.loads(m.value)["payload"]["op"]
                                                               if m.value else None))
        reader.close()
        return {k for k, op in left if op == "d"}, len(tombstones)

    deadline, n = time.monotonic() + 120, 0
    while True:  # other users change, so segments roll and the cleaner compacts
        n += 1
        capture.conn.execute(f"UPDATE \"{capture.table}\" SET full_name = full_name || '.' WHERE id > 20")
        time.sleep(0.5)
        left, tombstones = delete_events_left()
        if not left and tombstones == 20:
            break
        assert time.monotonic() < deadline, f"the log cleaner kept delete events of {sorted(left)}"
    result = capture.converge(store)
    assert result.matches, result.summary()
    assert result.state_rows == 180
    store.close()


def test_the_connector_writes_compressed_batches_that_the_consumer_reads(capture, tmp_path):
    """connectors/users.yaml makes the worker's producer compress (LZ4): the topic holds far fewer
    bytes than its records, and the consumer (kafka-python, with the `lz4` package) reads them."""
    from kafka import TopicPartition

    from ecst import kafka
    from ecst.consumer.store import StateStore

    capture.create(rows=2000)
    capture.apply()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    capture.consumer(store).run(until_ready=True)
    result = capture.compare(store)
    store.close()
    assert result.matches, result.summary()

    reader = kafka.consumer(capture.stack.bootstrap, group_id=None)
    admin = kafka.admin(capture.stack.bootstrap)
    try:
        tps = [TopicPartition(capture.topic, p) for p in sorted(reader.partitions_for_topic(capture.topic))]
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        ends, raw, seen = reader.end_offsets(tps), 0, 0
        deadline = time.monotonic() + 60
        while seen < sum(ends.values()) and time.monotonic() < deadline:
            for messages in reader.poll(timeout_ms=500).values():
                raw += sum(len(m.key or b"") + len(m.value or b"") for m in messages)
                seen += len(messages)
        [broker] = admin.describe_log_dirs([capture.topic])
        on_disk = sum(p["partition_size"] for d in broker["log_dirs"] for t in d["topics"]
                      for p in t["partitions"] if t["name"] == capture.topic)
    finally:
        reader.close()
        admin.close()
    assert seen == sum(ends.values()) >= 2000
    # uncompressed, the log would hold the records plus their batches' and records' headers
    assert on_disk < raw / 2, (on_disk, raw)

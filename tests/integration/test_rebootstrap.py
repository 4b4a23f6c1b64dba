"""Re-bootstrap by replaying the topic (issue 5, first mode) and `ecst verify`, on the real stack:
a corrupted state is rebuilt in a shadow copy while a writer changes users and a live consumer
keeps running; after the swap the state equals the source exactly and verify finds no drift."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager

from kafka import KafkaConsumer, TopicPartition

from ecst import source
from ecst.connectors.definition import parse_definition
from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.events import Record, decode
from ecst.consumer.rebuild import replay
from ecst.consumer.store import StateStore
from tests.integration.cli import ECST


def verify_cli(capture, state_url, *extra):
    return subprocess.run([*ECST, "verify", "--state-url", state_url, "--topic", capture.topic, *extra],
                          capture_output=True, text=True, timeout=120)


def corrupt(store, table):
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{table}" WHERE id % 10 = 0')            # lost rows
        conn.exec_driver_sql(f"UPDATE \"{table}\" SET full_name = 'bug' WHERE id % 7 = 0")  # bad values
        conn.exec_driver_sql(f'UPDATE "{table}" SET id = id + 1000000 WHERE id % 11 = 0')  # extra rows


def offsets(bootstrap, topic):
    """(beginning, end) offsets of every partition of `topic`, by partition number."""
    probe = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or ())]
    begins, ends = probe.beginning_offsets(tps), probe.end_offsets(tps)
    probe.close()
    return {tp.partition: o for tp, o in begins.items()}, {tp.partition: o for tp, o in ends.items()}


def read_topic(bootstrap, topic, start=None):
    """Every record of `topic` from `start` (partition -> offset; default: the beginning) to the
    end offsets of now, decoded: a list of (partition, offset, event or None)."""
    begins, ends = offsets(bootstrap, topic)
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in ends]
    reader.assign(tps)
    for tp in tps:
        reader.seek(tp, max(begins[tp.partition], (start or {}).get(tp.partition, 0)))
    out = []
    while any(reader.position(tp) < ends[tp.partition] for tp in tps):
        for tp, messages in reader.poll(timeout_ms=1000).items():
            out += [(m.partition, m.offset, decode(Record(m.topic, m.partition, m.offset, m.key, m.value)))
                    for m in messages if m.offset < ends[tp.partition]]
    reader.close()
    return out


@contextmanager
def writer(capture, seed=100, per_round=(5, 15, 3)):
    """A producer that keeps inserting, updating and deleting users until the block ends."""
    done = threading.Event()
    inserts, updates, deletes = per_round

    def write():
        conn = capture.stack.producer_conn()
        n = seed
        while not done.is_set():
            n += 1
            source.write_changes(conn, capture.table, inserts=inserts, updates=updates, deletes=deletes,
                                 seed=n)
            time.sleep(0.1)
        conn.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextmanager
def live_consumer(capture, url, batch_size=200):
    """The service's own consumer, running (and serving) throughout the rebuild."""
    stop = threading.Event()
    store = StateStore(url)
    live = capture.consumer(store, batch_size=batch_size)
    thread = threading.Thread(target=live.run, kwargs={"stop": stop})
    thread.start()
    try:
        yield live
    finally:
        stop.set()
        thread.join(timeout=60)
        store.close()


def test_replay_rebuild_under_writes_and_a_live_consumer_then_verify(capture, tmp_path):
    capture.create(rows=3000)
    capture.apply()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    capture.consumer(store).run(until_ready=True)
    corrupt(store, capture.table)
    drift = verify_cli(capture, url)
    assert drift.returncode == 1 and "DRIFT" in drift.stdout, drift.stdout + drift.stderr

    with live_consumer(capture, url, batch_size=100) as live:
        with writer(capture, per_round=(10, 20, 5)):
            deadline = time.monotonic() + 60
            while live.stats.apply.by_op["u"] == 0:  # changes are streaming before the rebuild starts
                assert time.monotonic() < deadline
                time.sleep(0.2)
            config = ConsumerConfig(topics=(TopicMapping(capture.topic),), group_id=f"g-{capture.uid}")
            result = replay(url, config, capture.stack.bootstrap)
            assert result.tables == [capture.table] and result.records > 3000
        # the live consumer picks up from the rebuild's offsets; the state converges exactly
        deadline = time.monotonic() + 90
        while not capture.compare(store).matches and time.monotonic() < deadline:
            time.sleep(1)
    result = capture.compare(store)
    assert result.matches, result.summary()
    ok = verify_cli(capture, url)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("no drift"), ok.stdout + ok.stderr
    store.close()


def test_a_mapping_change_rebuilt_by_replay_fills_the_new_column_for_every_row(capture, tmp_path):
    capture.create(rows=500)
    capture.apply()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    narrow = (TopicMapping(capture.topic, table="people", columns={"id": "id", "email": "email"}),)
    store = StateStore(url)
    capture.consumer(store, topics=narrow).run(until_ready=True)
    assert set(store.rows("people")[0]) == {"id", "email"}

    wider = (TopicMapping(capture.topic, table="people",
                          columns={"id": "id", "email": "email", "full_name": "name"}),)
    replay(url, ConsumerConfig(topics=wider, group_id=f"g-{capture.uid}"), capture.stack.bootstrap)
    rows = {r["id"]: r for r in store.rows("people")}
    assert len(rows) == 500 and all(r["name"] == f"User {i}" for i, r in rows.items())
    store.close()


def _shadow_offsets(path):
    """The rows of the rebuild's offsets table in a SQLite state, none while it does not exist."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
        try:
            return db.execute("SELECT * FROM ecst_shadow__ecst_offsets").fetchall()
        except sqlite3.OperationalError:  # not created yet, or locked for a moment
            return []


def test_a_rebuild_killed_midway_resumes_and_finishes(capture, tmp_path):
    capture.create(rows=30000)
    capture.apply()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    capture.consumer(store).run(until_ready=True)
    corrupt(store, capture.table)
    args = [*ECST, "rebootstrap", "replay", "--state-url", url, "--topic", capture.topic,
            "--bootstrap-servers", capture.stack.bootstrap, "--group", f"g-{capture.uid}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    # Killed once it has applied a batch (not after a fixed time, which a busy machine overruns),
    # read with sqlite3 so that nothing is created in the shadow's namespace meanwhile.
    deadline = time.monotonic() + 120
    while not _shadow_offsets(tmp_path / "state.db"):
        assert proc.poll() is None, "the rebuild ended before it could be killed midway"
        assert time.monotonic() < deadline, "the rebuild applied nothing in 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    shadow = StateStore(url, namespace="ecst_shadow__")
    assert shadow.stored_offsets(), "the rebuild was killed before it applied anything"
    shadow.close()
    assert not capture.compare(store).matches  # nothing was swapped in: the live copy is as it was
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("replay rebuild resumed and finished")
    result = capture.compare(store)
    assert result.matches, result.summary()
    store.close()


def compact_quickly(capture):
    """Topics the connector creates get segments that roll every 200 ms, and any dirty ratio
    makes them cleanable: the broker's log cleaner (backoff 1 s) compacts within seconds."""
    capture.doc["config"].update({"topic.creation.default.segment.ms": "200",
                                  "topic.creation.default.min.cleanable.dirty.ratio": "0.01"})
    capture.definition = parse_definition(capture.doc, environ={})


def write_until_compacted(capture, timeout_s=120):
    """Update the same users over and over until the log cleaner has left gaps in the topic's
    offsets."""
    conn = capture.stack.producer_conn()
    deadline, n = time.monotonic() + timeout_s, 0
    while True:
        n += 1
        source.write_changes(conn, capture.table, inserts=1, updates=100, deletes=0, seed=n)
        time.sleep(0.25)  # segments roll
        if n >= 20 and n % 5 == 0:
            begins, ends = offsets(capture.stack.bootstrap, capture.topic)
            span = sum(ends[p] - begins[p] for p in ends)
            if len(read_topic(capture.stack.bootstrap, capture.topic)) < span:
                break
        assert time.monotonic() < deadline, "the log cleaner left no gap in the topic's offsets"
    conn.close()
    while True:  # until Debezium has sent every change: the end offsets stay put for 2 s
        ends = offsets(capture.stack.bootstrap, capture.topic)[1]
        time.sleep(2)
        if offsets(capture.stack.bootstrap, capture.topic)[1] == ends:
            return
        assert time.monotonic() < deadline, "the change topic keeps growing"


def test_replay_progress_on_a_compacted_topic_ends_at_100_percent_when_the_replay_ends(capture, tmp_path):
    compact_quickly(capture)
    capture.create(rows=300)
    capture.apply()
    write_until_compacted(capture)
    begins, ends = offsets(capture.stack.bootstrap, capture.topic)
    span = sum(ends[p] - begins[p] for p in ends)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    reports = []
    config = ConsumerConfig(topics=(TopicMapping(capture.topic),), group_id=f"g-{capture.uid}",
                            batch_size=100)  # 300 keys or more: several batches
    result = replay(url, config, capture.stack.bootstrap,
                    progress=lambda p: reports.append((p.done, p.expected, p.line())))
    # the offsets have gaps (the records compaction removed): fewer records than offsets were read
    assert result.records < span
    # the bar counts the topic's offsets, up to the end offsets the replay started with; it
    # moves forward, and reaches its end with the replay's last batch, not before
    done = [d for d, _, _ in reports]
    assert all(expected == span for _, expected, _ in reports)
    assert done == sorted(done) and done[-2:] == [span, span]
    assert len(reports) >= 3 and all(d < span for d in done[:-2])  # the last batch, then the final line
    assert reports[-1][2].startswith(f"[{'#' * 30}] {span:,}/{span:,} offsets (100%)"), reports[-1][2]
    store = StateStore(url)
    check = capture.compare(store)
    assert check.matches, check.summary()
    store.close()

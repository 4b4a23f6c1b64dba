"""Re-bootstrap from Debezium snapshots (issue 5: incremental, filtered backfill, blocking and
fresh), on the real stack: each rebuild runs while a writer changes users; afterwards, with the
writer stopped and the consumer caught up, the state equals the source and verify finds no drift.
"""

import json
import os
import signal
import subprocess
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from ecst import verify
from ecst.connectors import signals
from ecst.connectors.client import ConnectClient
from ecst.connectors.definition import parse_definition
from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.events import Record, decode
from ecst.consumer.rebuild import SnapshotSource, rebuild
from ecst.consumer.store import StateStore
from ecst.demo import delete_topics
from tests.integration.test_rebootstrap import (
    ECST,
    corrupt,
    live_consumer,
    offsets,
    read_topic,
    verify_cli,
    writer,
)


def snapshot_source(capture, channel="auto"):
    return SnapshotSource(ConnectClient(capture.stack.connect_url), capture.definition.name, channel,
                          capture.stack.producer_conn)


def config_for(capture):
    return ConsumerConfig(topics=(TopicMapping(capture.topic),), group_id=f"g-{capture.uid}")


def assert_converges_without_drift(capture, url):
    store = StateStore(url)
    result = capture.converge(store)
    assert result.matches, result.summary()
    ok = verify_cli(capture, url)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("no drift"), ok.stdout + ok.stderr
    store.close()


def snapshot_records(capture, start, kind=None):
    """The snapshot rows (op=r) in the change topic from `start` to its end now; `kind` keeps
    only those whose source.snapshot is that value."""
    return sum(1 for _p, _o, e in read_topic(capture.stack.bootstrap, capture.topic, start)
               if e is not None and e.op == "r" and kind in (None, e.snapshot))


def notifications(capture, start=None):
    """Debezium's notifications on the connector's sink topic, from `start` to its end now."""
    topic = capture.definition.config["notification.sink.topic.name"]
    out = []
    reader = KafkaConsumer(bootstrap_servers=capture.stack.bootstrap, enable_auto_commit=False)
    begins, ends = offsets(capture.stack.bootstrap, topic)
    tps = [TopicPartition(topic, p) for p in ends]
    reader.assign(tps)
    for tp in tps:
        reader.seek(tp, max(begins[tp.partition], (start or {}).get(tp.partition, 0)))
    while any(reader.position(tp) < ends[tp.partition] for tp in tps):
        for messages in reader.poll(timeout_ms=1000).values():
            out += [signals.parse_notification(m.value) for m in messages]
    reader.close()
    return sorted((n for n in out if n is not None), key=lambda n: n.timestamp)


def rows_scanned(capture, start):
    """What Debezium reports it read from the table, per snapshot since `start`: the table's
    row count at snapshot time (TABLE_SCAN_COMPLETED's total_rows_scanned)."""
    return [n.rows_scanned() for n in notifications(capture, start) if n.type == "TABLE_SCAN_COMPLETED"
            and n.data.get("scanned_collection") == f"public.{capture.table}"]


def after_initial_snapshot(capture, timeout_s=90):
    """Once Debezium reported the scan of the initial snapshot: the notification topic's end
    offsets, where the notifications of the next snapshot start."""
    deadline = time.monotonic() + timeout_s
    while not rows_scanned(capture, None):
        assert time.monotonic() < deadline, "the connector's initial snapshot did not finish"
        time.sleep(0.5)
    return offsets(capture.stack.bootstrap, capture.definition.config["notification.sink.topic.name"])[1]


def position_regressions(capture):
    """Per key, in the order the topic holds them: events whose position is lower than an
    earlier event's for the same key (positions order events by commit, docs/positions.md;
    checked here for incremental rows)."""
    reader = KafkaConsumer(capture.topic, bootstrap_servers=capture.stack.bootstrap,
                           auto_offset_reset="earliest", consumer_timeout_ms=5000)
    latest, regressions, incremental = {}, [], 0
    for m in reader:
        event = decode(Record(m.topic, m.partition, m.offset, m.key, m.value))
        if event is None or event.position is None:
            continue
        incremental += event.snapshot == "incremental"
        key = json.dumps(event.key, sort_keys=True, default=str)
        if key in latest and event.position < latest[key][0]:
            regressions.append((key, latest[key], (event.position, event.op, event.snapshot)))
        latest[key] = max(latest.get(key, (-1,)), (event.position, event.op, event.snapshot))
    reader.close()
    return regressions, incremental


def test_incremental_rebuild_of_a_corrupted_state_under_writes_and_a_live_consumer(capture, tmp_path):
    capture.create(rows=3000)
    capture.apply()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    capture.consumer(store).run(until_ready=True)
    corrupt(store, capture.table)  # lost rows, wrong values, extra rows
    with live_consumer(capture, url) as live, writer(capture):
        start = offsets(capture.stack.bootstrap, capture.topic)[1]
        result = rebuild("incremental", url, config_for(capture), capture.stack.bootstrap,
                         source=snapshot_source(capture, "source"))
        assert live.ready()  # the service kept serving throughout
    assert result.tables == [capture.table] and result.mode == "incremental"
    # every incremental-snapshot row the connector sent was read, and counted once (rows deleted
    # before their chunk was read, or changed inside its window, are not sent)
    assert result.snapshot_rows == snapshot_records(capture, start, "incremental")
    assert result.snapshot_rows >= 2500
    assert result.removed[capture.table] >= 200  # the extra rows were reconciled away
    assert_converges_without_drift(capture, url)
    # the experimental check of incremental-snapshot positions (LSN for streamed events,
    # sequence[1] for incremental rows): no key ever goes backwards in topic order
    regressions, incremental = position_regressions(capture)
    assert incremental >= 2500
    assert regressions == []


def test_filtered_backfill_touches_only_the_matching_rows(capture, tmp_path, stack):
    capture.create(rows=2000)
    capture.apply()
    url, drop = stack.new_database(f"state_{capture.uid}")
    store = StateStore(url)
    try:
        filtered_backfill(capture, store, url)
    finally:
        store.close()
        drop()


def filtered_backfill(capture, store, url):
    capture.consumer(store).run(until_ready=True)
    assert len(store.rows(capture.table)) == 2000
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE \"{capture.table}\" SET full_name = 'bug' WHERE mod(id, 5) = 0")
        conn.exec_driver_sql(f'DELETE FROM "{capture.table}" WHERE mod(id, 9) = 0')
        conn.exec_driver_sql(f"INSERT INTO \"{capture.table}\" (id, email, full_name, country, balance, "
                             "active, created_at, updated_at, _ecst_position) SELECT id + 900000, email, "
                             "full_name, country, balance, active, created_at, updated_at, 1 FROM "
                             f'"{capture.table}" WHERE id <= 20')
    before = {r["id"]: r for r in store.rows(capture.table)}
    result = rebuild("incremental", url, config_for(capture), capture.stack.bootstrap,
                     source=snapshot_source(capture, "kafka"), condition="id <= 1000")
    assert result.merged == 1000 and result.snapshot_rows == 1000
    after = {r["id"]: r for r in store.rows(capture.table)}
    truth = {r["id"]: r for r in verify.source_rows(capture.conn, capture.table)}
    for key in range(1, 1001):  # every matching row is back, with its source values
        assert after[key]["full_name"] == truth[key]["full_name"], key
    untouched = [k for k in before if k > 1000]
    assert all(after[k] == before[k] for k in untouched)  # corrupted, extra: left as they were
    assert sum(1 for k in range(1001, 2001) if k % 9 == 0 and k not in after) == 111
    assert sum(1 for k in range(1001, 2001) if after.get(k, {}).get("full_name") == "bug") == 178
    assert sum(1 for k in after if k > 900000) == 18  # an extra row is not "matching": kept


def test_blocking_rebuild_from_an_empty_state_under_writes(capture, tmp_path, stack):
    capture.create(rows=3000)
    capture.apply()
    url, drop = stack.new_database(f"state_{capture.uid}")
    try:
        notified = after_initial_snapshot(capture)
        # the service starts long after the users were created, with nothing: the rebuild makes
        # its first copy while the producer keeps writing
        with writer(capture):
            time.sleep(1)
            start = offsets(capture.stack.bootstrap, capture.topic)[1]
            result = rebuild("blocking", url, config_for(capture), capture.stack.bootstrap,
                             source=snapshot_source(capture))
        assert result.mode == "blocking" and result.rows_before == {capture.table: 0}
        # the snapshot rows: exactly the table's rows when it was read (Debezium's count), each
        # read by the rebuild, though streamed changes to some of them came in the same batches
        assert [result.snapshot_rows] == rows_scanned(capture, notified)
        assert result.snapshot_rows == snapshot_records(capture, start)
        assert result.rows_after[capture.table] >= 2900
        assert_converges_without_drift(capture, url)
    finally:
        drop()


def test_fresh_rebuild_after_the_topic_was_lost(capture, tmp_path):
    capture.create(rows=2000)
    capture.apply()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    capture.consumer(store).run(until_ready=True)
    corrupt(store, capture.table)
    client = ConnectClient(capture.stack.connect_url)
    client.stop(capture.definition.name)
    delete_topics(capture.stack.bootstrap, [capture.topic])  # the topic is gone as well
    notified = after_initial_snapshot(capture)
    with writer(capture):
        result = rebuild("fresh", url, config_for(capture), capture.stack.bootstrap,
                         source=snapshot_source(capture))
    assert result.mode == "fresh" and result.snapshot_rows >= 2000
    # exactly the table's rows at snapshot time, all of them in the new topic, each counted once
    assert [result.snapshot_rows] == rows_scanned(capture, notified)
    assert result.snapshot_rows == snapshot_records(capture, None)
    status = client.status(capture.definition.name)
    assert status["connector"]["state"] == "RUNNING"
    assert_converges_without_drift(capture, url)
    store.close()


def test_a_killed_incremental_rebuild_reports_progress_and_resumes(capture, tmp_path):
    capture.doc["config"]["incremental.snapshot.chunk.size"] = 200  # many chunks: time to kill it
    capture.definition = parse_definition(capture.doc, environ={})
    capture.create(rows=20000)
    capture.apply()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    capture.consumer(store).run(until_ready=True)
    corrupt(store, capture.table)
    corrupted = store.rows(capture.table)
    env = {**os.environ, "ECST_CONNECT_URL": capture.stack.connect_url,
           "ECST_BOOTSTRAP_SERVERS": capture.stack.bootstrap}
    cmd = [*ECST, "rebootstrap", "incremental", "--state-url", url, "--topic", capture.topic,
           "--group", f"g-{capture.uid}", "--connector", capture.definition.name]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while (store.rebuild_in_progress() or {}).get("rows_applied", 0) < 2000:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # reaps it and closes its pipes
    # the live state is untouched; the rebuild's progress is visible to operators
    def by_id(rows):
        return sorted(rows, key=lambda r: r["id"])
    assert by_id(store.rows(capture.table)) == by_id(corrupted)
    status = subprocess.run([*ECST, "status", "--state-url", url], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0, status.stderr
    assert "rebuild     incremental snapshotting:" in status.stdout, status.stdout
    service = capture.consumer(StateStore(url))
    service.observe_rebuild()
    assert service.metrics.value("ecst_rebuild_in_progress", mode="incremental") == 1.0
    assert service.metrics.value("ecst_rebuild_rows_applied") >= 2000
    # the same command resumes: same signal, no second snapshot
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "incremental rebuild resumed and finished" in done.stdout, done.stdout
    assert store.rebuild_in_progress() is None
    assert_converges_without_drift(capture, url)
    final = subprocess.run([*ECST, "status", "--state-url", url, "-o", "json"], capture_output=True,
                           text=True, timeout=60)
    report = json.loads(final.stdout)
    assert report["rebuild_in_progress"] is None
    assert report["last_rebuild"]["result"]["mode"] == "incremental"
    store.close()


@pytest.mark.parametrize("mode", ["incremental", "blocking"])
def test_a_transaction_open_across_the_snapshot_is_not_lost(capture, tmp_path, mode):
    # The experiment docs/positions.md records: a transaction updates a row,
    # stays open while the snapshot reads that row (old value), and commits afterwards. Its change
    # record's LSN is below the snapshot row's position; ordering by commit keeps it.
    capture.create(rows=3000)
    capture.apply()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    capture.consumer(store).run(until_ready=True)
    open_txn = capture.stack.producer_conn()
    open_txn.autocommit = False
    open_txn.execute(f"UPDATE \"{capture.table}\" SET full_name = 'committed late' WHERE id = 2900")
    try:
        rebuild(mode, url, config_for(capture), capture.stack.bootstrap, source=snapshot_source(capture))
        assert {r["id"]: r for r in store.rows(capture.table)}[2900]["full_name"] == "User 2900"
        open_txn.commit()
    finally:
        open_txn.close()
    assert_converges_without_drift(capture, url)
    regressions, incremental = position_regressions(capture)
    assert regressions == [] and (incremental >= 3000 if mode == "incremental" else incremental == 0)
    store.close()

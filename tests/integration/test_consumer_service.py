"""The consumer as a service on the real stack: kill -9 at random moments, dead-letter topic,
fail-fast, SIGTERM, the /healthz, /readyz and /metrics endpoints, and a topic created after the
consumer started."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ecst import source
from ecst.consumer.store import StateStore
from ecst.exceptions import EventError
from tests.integration.cli import free_port
from tests.integration.cli import http_get as get


def consume_process(capture, state_url, *extra, group=None):
    return subprocess.Popen(
        [sys.executable, "-m", "ecst", "consume", "--state-url", state_url, "--topic", capture.topic,
         "--bootstrap-servers", capture.stack.bootstrap, "--group", group or f"svc-{capture.uid}",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def snapshot_complete(state_url, topic):
    store = StateStore(state_url)
    try:
        snap = store.snapshot_states().get(topic)
        return snap is not None and snap.state == "complete"
    finally:
        store.close()


def applied(path):
    """The sum of the offsets a state file holds (read-only: the consumer may be writing)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return db.execute("SELECT coalesce(sum(next_offset), 0) FROM ecst_offsets").fetchone()[0]
    except sqlite3.OperationalError:  # no file, or no table yet
        return 0






def test_kill_9_at_random_moments_loses_nothing_and_applies_nothing_twice(capture, tmp_path):
    rnd = random.Random(int(os.environ.get("ECST_TEST_SEED", "20261129")))
    capture.create(rows=10000)
    capture.apply()
    state_file = tmp_path / "state.db"
    state = f"sqlite:///{state_file}"

    # a writer keeps changing users while the consumer is killed again and again
    stop_writer = threading.Event()

    def writer():
        conn = capture.stack.producer_conn()
        seed = 0
        while not stop_writer.is_set():
            seed += 1
            source.write_changes(conn, capture.table, inserts=20, updates=40, deletes=10, seed=seed,
                                 per_txn=10)
            time.sleep(0.2)
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    kills = []  # (phase the kill hit, seconds the process had run)
    try:
        # Kill until both phases were hit twice. Offsets live in the state database, so each run
        # may use a fresh group id: it is assigned at once instead of waiting for the killed
        # member's session to expire, and the kill lands while batches are being applied.
        while len(kills) < 30 and not (
            sum(p == "snapshot" for p, _ in kills) >= 2 and sum(p == "streaming" for p, _ in kills) >= 2
        ):
            phase = "streaming" if snapshot_complete(state, capture.topic) else "snapshot"
            proc = consume_process(capture, state, "--batch-size", "500",
                                   group=f"svc-{capture.uid}-{len(kills)}")
            # the kill lands while batches are being applied: after this run's first commit (a
            # fixed delay would hit a slow machine's start-up instead, and the test never ends)
            started, before, deadline = time.monotonic(), applied(state_file), time.monotonic() + 60
            while applied(state_file) == before:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
            time.sleep(rnd.uniform(0.2, 2.0) if phase == "snapshot" else rnd.uniform(0.0, 3.0))
            after = time.monotonic() - started
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            assert proc.returncode == -signal.SIGKILL
            kills.append((phase, round(after, 1)))
    finally:
        stop_writer.set()
        thread.join()
    print("kills (phase, seconds after start):", kills)
    assert sum(p == "snapshot" for p, _ in kills) >= 2 and sum(p == "streaming" for p, _ in kills) >= 2

    store = StateStore(state)
    result = capture.converge(store)
    store.close()
    assert result.matches, result.summary()


def _send_garbage(capture):
    producer = KafkaProducer(bootstrap_servers=capture.stack.bootstrap)
    producer.send(capture.topic, key=b'{"id": 424242}', value=b"this is not JSON", partition=0)
    # a well-formed change the state store must reject: a text value for a bigint key
    envelope = {"op": "c", "source": {"table": capture.table, "lsn": 10**12},
                "after": {"id": "not-a-number", "email": "x"}}
    producer.send(capture.topic, key=b'{"id": "not-a-number"}', value=json.dumps(envelope).encode(),
                  partition=0)
    producer.flush()
    producer.close()


def test_bad_records_go_to_the_dead_letter_topic_and_the_pipeline_goes_on(capture, stack):
    capture.create(rows=50)
    capture.apply()
    url, drop = stack.new_database(f"dlq_{capture.uid}")
    store = StateStore(url)  # Postgres rejects the text id, so both stages are exercised
    try:
        capture.consumer(store).run(until_ready=True)
        _send_garbage(capture)
        source.write_changes(capture.conn, capture.table, inserts=5, updates=5, deletes=5, seed=9)
        dlq = f"dlq-{capture.uid}"
        result = capture.converge(store, dead_letter_topic=dlq)
        assert result.matches, result.summary()

        reader = KafkaConsumer(bootstrap_servers=stack.bootstrap, consumer_timeout_ms=5000,
                               auto_offset_reset="earliest")
        reader.assign([TopicPartition(dlq, 0)])
        records = list(reader)
        reader.close()
        assert len(records) == 2  # each bad record dead-lettered once
        by_stage = {dict(r.headers)["ecst.stage"].decode(): r for r in records}
        assert set(by_stage) == {"decode", "apply"}
        decode_rec = by_stage["decode"]
        headers = {k: v.decode() for k, v in decode_rec.headers}
        assert decode_rec.value == b"this is not JSON" and decode_rec.key == b'{"id": 424242}'
        assert headers["ecst.source.topic"] == capture.topic and headers["ecst.source.partition"] == "0"
        assert int(headers["ecst.source.offset"]) >= 0 and "not JSON" in headers["ecst.error"]
        assert "rejected by the state store" in dict(by_stage["apply"].headers)["ecst.error"].decode()
    finally:
        store.close()
        drop()
        from ecst.demo import delete_topics

        delete_topics(stack.bootstrap, [f"dlq-{capture.uid}"])


def test_fail_fast_stops_at_the_bad_record_with_its_position(capture, tmp_path):
    capture.create(rows=20)
    capture.apply()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    capture.consumer(store).run(until_ready=True)
    before = store.stored_offsets()
    _send_garbage(capture)
    with pytest.raises(EventError, match=rf"{capture.topic}\[0\]@\d+: record value is not JSON"):
        capture.consumer(store, fail_fast=True).run(until_caught_up=True)
    assert store.stored_offsets() == before  # nothing past the good batches
    store.close()


def test_sigterm_finishes_and_endpoints_report_readiness_and_metrics(capture, tmp_path):
    port = free_port()
    capture.create(rows=2000)
    proc = consume_process(capture, f"sqlite:///{tmp_path / 'state.db'}", "--http-port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while get(f"{base}/healthz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/readyz")[0] == 503  # no snapshot applied yet: not ready

        capture.apply()
        deadline = time.monotonic() + 90
        while get(f"{base}/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert get(f"{base}/readyz") == (200, "ready\n")
        status, metrics = get(f"{base}/metrics")
        assert status == 200
        assert f'ecst_events_applied_total{{op="r",table="{capture.table}"}} 2000' in metrics
        assert f'ecst_snapshot_complete{{topic="{capture.topic}"}} 1' in metrics
        assert "ecst_ready 1" in metrics and "ecst_batch_seconds_count" in metrics
        assert "ecst_replication_delay_seconds" in metrics and "ecst_partition_lag{" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.startswith("applied ") and "r=2000" in out


def wait_for(check, timeout_s, proc=None, what="condition"):
    """Poll `check` until it is true; fails when `proc` exits first or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the consumer exited ({proc.returncode}) while waiting for {what}: {err[-2000:]}")
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s"
        time.sleep(0.25)


class Writer:
    """Keeps changing the captured users in the background (inserts, updates, deletes)."""

    def __init__(self, capture) -> None:
        self.capture = capture
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        conn = self.capture.stack.producer_conn()
        seed = 1000
        while not self.stop.is_set():
            seed += 1
            source.write_changes(conn, self.capture.table, inserts=5, updates=10, deletes=3, seed=seed,
                                 per_txn=6)
            time.sleep(0.2)
        conn.close()

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def set_connections(stack, database, allowed):
    """Make a state database unavailable (no new connections, its sessions terminated) or
    available again; the shared Postgres server keeps running."""
    with closing(stack.producer_conn()) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (database,))


def metric(base, line_start):
    """The value of the first /metrics sample starting with `line_start`, or None."""
    status, text = get(f"{base}/metrics")
    for line in text.splitlines() if status == 200 else []:
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def converged(capture, url):
    store = StateStore(url)
    try:
        return capture.compare(store)
    finally:
        store.close()


def test_a_state_store_outage_is_waited_out_not_ready_and_nothing_is_lost(capture, stack):
    capture.create(rows=2000)
    capture.apply()
    database = f"state_{capture.uid}"
    url, drop = stack.new_database(database)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = consume_process(capture, url, "--http-port", str(port), "--batch-size", "200")
    try:
        wait_for(lambda: get(f"{base}/readyz")[0] == 200, 120, proc, "readiness")
        assert metric(base, "ecst_state_store_up") == 1
        with Writer(capture):
            time.sleep(2)  # batches are being applied
            set_connections(stack, database, allowed=False)
            down_at = time.monotonic()
            # longer than the 5 retries (about 16 s) after which the consumer used to give up
            wait_for(lambda: metric(base, "ecst_state_store_up") == 0, 20, proc, "ecst_state_store_up 0")
            while time.monotonic() - down_at < 30:
                assert proc.poll() is None, proc.communicate()
                assert get(f"{base}/readyz") == (503, "not ready: state store unavailable\n")
                assert get(f"{base}/healthz")[0] == 200  # the loop is alive: no restart needed
                assert metric(base, "ecst_state_store_up") == 0
                time.sleep(1)
            assert metric(base, "ecst_state_store_retries_total") >= 3
            set_connections(stack, database, allowed=True)
            back_at = time.monotonic()
            wait_for(lambda: metric(base, "ecst_state_store_up") == 1, 60, proc, "ecst_state_store_up 1")
            wait_for(lambda: get(f"{base}/readyz")[0] == 200, 60, proc, "readiness after the outage")
            print(f"outage {back_at - down_at:.1f} s; store up again {time.monotonic() - back_at:.1f} s "
                  "after it accepted connections")
            time.sleep(3)  # more changes after the outage
        # the same process, never restarted, catches up: every column of every row equals the source
        deadline = time.monotonic() + 120
        while not (result := converged(capture, url)).matches and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(1)
        assert result.matches, result.summary()
    finally:
        set_connections(stack, database, allowed=True)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        drop()
    assert proc.returncode == 0, err
    assert "state store unavailable" in err and "state store back after" in err


def test_a_consumer_started_while_its_state_store_is_down_waits_for_it(capture, stack):
    capture.create(rows=300)
    capture.apply()
    database = f"state_{capture.uid}"
    url, drop = stack.new_database(database)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    set_connections(stack, database, allowed=False)
    proc = consume_process(capture, url, "--http-port", str(port))
    try:
        unavailable = (503, "not ready: state store unavailable\n")
        wait_for(lambda: get(f"{base}/readyz") == unavailable, 60, proc, "/readyz saying why")
        for _ in range(10):  # it waits, alive and not ready, for as long as the store is away
            assert get(f"{base}/healthz")[0] == 200
            assert proc.poll() is None, proc.communicate()
            assert get(f"{base}/readyz") == unavailable
            assert metric(base, "ecst_state_store_up") == 0
            time.sleep(1)
        set_connections(stack, database, allowed=True)
        wait_for(lambda: get(f"{base}/readyz")[0] == 200, 90, proc, "readiness")
        result = converged(capture, url)
        assert result.matches, result.summary()
    finally:
        set_connections(stack, database, allowed=True)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        drop()
    assert proc.returncode == 0, err


def test_a_consumer_restarted_after_kill_9_gets_its_partitions_back_at_once(capture, tmp_path):
    capture.create(rows=500)
    capture.apply()
    state_file = tmp_path / "state.db"
    state = f"sqlite:///{state_file}"
    proc = consume_process(capture, state)  # the same group every time, as a service restarts
    pauses = []
    try:
        wait_for(lambda: snapshot_complete(state, capture.topic), 120, proc, "the snapshot")
        with Writer(capture):
            for _ in range(3):
                before = applied(state_file)
                wait_for(lambda b=before: applied(state_file) > b, 60, proc, "a batch")  # streaming
                proc.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                proc.communicate()
                before = applied(state_file)
                proc = consume_process(capture, state)
                wait_for(lambda b=before: applied(state_file) > b, 120, proc, "the first batch after kill -9")
                pauses.append(round(time.monotonic() - killed_at, 1))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    print(f"kill -9 to the restarted consumer's first batch: {pauses} s, median "
          f"{sorted(pauses)[len(pauses) // 2]} s")
    # it used to wait for the killed member's session to time out (45 s)
    assert max(pauses) < 25, pauses
    store = StateStore(state)
    result = capture.converge(store)
    store.close()
    assert result.matches, result.summary()


def test_two_processes_with_one_group_instance_id_the_fenced_one_stops_with_one_line(capture, tmp_path):
    capture.create(rows=100)
    capture.apply()
    first_state, second_state = (f"sqlite:///{tmp_path / name}" for name in ("first.db", "second.db"))
    first = consume_process(capture, first_state, "--group-instance-id", "users-0")
    second = None
    try:
        wait_for(lambda: snapshot_complete(first_state, capture.topic), 120, first, "the first's snapshot")
        second = consume_process(capture, second_state, "--group-instance-id", "users-0")
        wait_for(lambda: snapshot_complete(second_state, capture.topic), 120, second, "the second's snapshot")
        out, err = first.communicate(timeout=60)  # Kafka fenced the first: it stops by itself
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
    assert first.returncode == 1
    assert err.splitlines()[-1] == (
        f"Error: another consumer joined group 'svc-{capture.uid}' with this one's group instance id "
        "'users-0', so Kafka fenced this one: give each process its own (--group-instance-id, "
        "kafka.group_instance_id or ECST_GROUP_INSTANCE_ID)"), err


def test_a_service_started_before_its_topic_waits_for_it_and_logs_json(capture, tmp_path):
    """The connector is applied after the consumer started: the consumer waits for the topic (no
    timeout in service mode), /readyz says which topic it waits for, and once the connector runs
    the copy becomes ready. Its log is JSON lines, one per applied batch."""
    port = free_port()
    capture.create(rows=500)
    log_file = tmp_path / "consumer.log"
    with open(log_file, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecst", "--log-format", "json", "consume", "--state-url",
             f"sqlite:///{tmp_path / 'state.db'}", "--topic", capture.topic, "--bootstrap-servers",
             capture.stack.bootstrap, "--group", f"late-{capture.uid}", "--http-port", str(port),
             "--http-host", "0.0.0.0", "--batch-size", "100"],
            stdout=subprocess.PIPE, stderr=stderr, text=True)
    base = f"http://127.0.0.1:{port}"

    def logged():
        return [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]

    def looks():
        return [r for r in logged() if r["message"].startswith("still waiting for topic")]

    try:
        waiting = (503, f"not ready: waiting for topic {capture.topic}\n")
        wait_for(lambda: get(f"{base}/readyz") == waiting, 60, proc, "/readyz naming the missing topic")
        wait_for(lambda: len(looks()) >= 1, 60, proc, "a 'still waiting' line (every 10 s)")
        assert get(f"{base}/readyz") == waiting and get(f"{base}/healthz") == (200, "ok\n")
        assert metric(base, f'ecst_topic_present{{topic="{capture.topic}"}}') == 0.0

        capture.apply()  # the connector, late: its snapshot creates the topic
        wait_for(lambda: get(f"{base}/readyz") == (200, "ready\n"), 120, proc, "readiness")
        assert metric(base, f'ecst_topic_present{{topic="{capture.topic}"}}') == 1.0
        status, text = get(f"{base}/metrics")
        assert status == 200 and "ecst_build_info{version=" in text
        assert "process_resident_memory_bytes" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, log_file.read_text()[-3000:]
    assert "r=500" in out
    records = logged()
    first = next(r for r in records if "do not exist yet" in r["message"])
    assert first["level"] == "WARNING" and capture.topic in first["message"]
    assert {"ts", "level", "logger", "message"} <= set(first)
    batches = [r for r in records if r["message"].startswith("applied batch:")]
    assert batches and all(r["level"] == "INFO" and r["logger"] == "ecst.consumer.runner" for r in batches)
    assert sum(r["records"] for r in batches) >= 500 and sum(r["upserts"] for r in batches) == 500
    assert all(set(r["offsets"]) <= {f"{capture.topic}[{p}]" for p in range(16)} for r in batches)

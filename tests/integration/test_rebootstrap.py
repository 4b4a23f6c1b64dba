"""Re-bootstrap by replaying the topic (issue 5, first mode) and `ecst verify`, on the real stack:
a corrupted state is rebuilt in a shadow copy while a writer changes users and a live consumer
keeps running; after the swap the state equals the source exactly and verify finds no drift."""

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

from ecst import source
from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.rebuild import replay
from ecst.consumer.store import StateStore

ECST = [sys.executable, "-m", "ecst"]


def verify_cli(capture, state_url, *extra):
    return subprocess.run([*ECST, "verify", "--state-url", state_url, "--topic", capture.topic, *extra],
                          capture_output=True, text=True, timeout=120)


def corrupt(store, table):
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{table}" WHERE id % 10 = 0')            # lost rows
        conn.exec_driver_sql(f"UPDATE \"{table}\" SET full_name = 'bug' WHERE id % 7 = 0")  # bad values
        conn.exec_driver_sql(f'UPDATE "{table}" SET id = id + 1000000 WHERE id % 11 = 0')  # extra rows


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
    time.sleep(2.5)
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

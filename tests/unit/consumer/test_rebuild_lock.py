"""One rebuild at a time on a SQLite state (a real file, and a real second process): the second
is refused, naming the holder, before it touches the shadow; the lock dies with its process.
(The PostgreSQL lock is tested on the real server: tests/integration/test_state_postgres.py.)"""

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sqlalchemy import create_engine

from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.rebuild import rebuild
from ecst.consumer.rebuild_lock import LOCK_SUFFIX, RebuildLock
from ecst.consumer.shadow import SHADOW
from ecst.consumer.store import StateStore
from ecst.exceptions import RebuildError, StateStoreUnavailableError
from tests.unit.consumer.envelopes import TOPIC, event, row


def test_a_second_lock_on_the_same_state_is_refused_until_the_first_is_released(store, url):
    first = RebuildLock(store.engine, store.safe_url)
    first.acquire()
    second = RebuildLock(StateStore(url).engine, "the state", wait_s=0)
    with pytest.raises(RebuildError, match=r"another `ecst rebootstrap` is running on this state .*"
                                           r"rebuild-lock: pid \d+ on .* since 20"):
        second.acquire()
    assert not second.held
    first.release()
    with second:
        assert second.held
    assert not second.held
    first.release()  # released twice: nothing


def test_another_state_is_not_blocked(tmp_path, store):
    with RebuildLock(store.engine, "one"):
        other = StateStore(f"sqlite:///{tmp_path / 'other.db'}")
        with RebuildLock(other.engine, "two") as lock:
            assert lock.held


def test_an_in_memory_state_takes_no_lock():
    memory = StateStore("sqlite://")
    with RebuildLock(memory.engine, "memory") as lock:
        assert not lock.held


HOLDER = textwrap.dedent("""
    import sys, time
    from ecst.consumer.rebuild_lock import RebuildLock
    from ecst.consumer.store import StateStore
    RebuildLock(StateStore(sys.argv[1]).engine, "x").acquire()
    print("held", flush=True)
    time.sleep(60)
""")


def test_the_lock_of_a_killed_process_is_free_at_once(url, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock = RebuildLock(StateStore(url).engine, "the state", wait_s=0.5)
        started = time.monotonic()
        with pytest.raises(RebuildError, match=f"pid {holder.pid} "):
            lock.acquire()
        assert time.monotonic() - started >= 0.5  # asked again for its wait before refusing
        threading.Timer(0.3, holder.kill).start()  # SIGKILL: no cleanup runs in the holder
        lock.wait_s = 30
        lock.acquire()  # taken within the wait, once the holder is gone
        assert lock.held
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    lock.release()
    assert (tmp_path / f"state.db{LOCK_SUFFIX}").exists()  # left in place: removing it would race


def test_a_second_rebuild_with_restart_leaves_the_running_ones_shadow_alone(url, monkeypatch):
    monkeypatch.setattr("ecst.consumer.rebuild_lock.LOCK_WAIT_S", 0.2)
    shadow = StateStore(url, namespace=SHADOW)
    shadow.begin_rebuild({}, {"mode": "replay", "condition": None, "phase": "snapshotting",
                              "started_at": time.time(), "rows_applied": 0, "rows_expected": 0,
                              "offsets": []})
    shadow.apply([event("r", 1, 100, 0, after=row(1), snapshot="true")], {(TOPIC, 0): 1})
    before = shadow.rows("users")
    config = ConsumerConfig(topics=(TopicMapping(TOPIC),), group_id="g")
    with RebuildLock(shadow.engine, "the running rebuild"):
        with pytest.raises(RebuildError, match="another `ecst rebootstrap` is running"):
            rebuild("replay", url, config, "127.0.0.1:1", restart=True)  # Kafka is never reached
    assert shadow.rebuild_record() is not None and shadow.rows("users") == before == [before[0]]


def test_a_postgresql_state_that_cannot_be_reached_is_the_stores_unavailable_error():
    # nothing listens on port 1: the connection is refused at once (no server is needed)
    engine = create_engine("postgresql+psycopg://ecst:secret@127.0.0.1:1/state",
                           connect_args={"connect_timeout": 2})
    lock = RebuildLock(engine, "postgresql+psycopg://ecst:***@127.0.0.1:1/state", wait_s=0)
    refused = r"state store unavailable: .*refused.*127\.0\.0\.1:1/state"
    with pytest.raises(StateStoreUnavailableError, match=refused):
        lock.acquire()
    assert not lock.held

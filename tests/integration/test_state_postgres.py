"""The state store on a real Postgres database (issue 9).

A rebuild's swap and a live consumer's batch on a shared Postgres state: the live consumer checks
the state's generation, then writes its batch and its offsets. If the swap commits in between, the
batch's rows land in the swapped-in table and its offsets replace the rebuild's: whatever the live
consumer had applied beyond the rebuild's offsets (to the old table) is lost for good. The swap
must wait for a batch in progress, or the batch for the swap. Also: no invented column defaults,
and one rebuild at a time per database.
"""

import threading
import uuid

import pytest
from sqlalchemy import event as sa_event

from ecst.consumer.events import Record, decode
from ecst.consumer.rebuild_lock import RebuildLock
from ecst.consumer.shadow import SHADOW
from ecst.consumer.snapshots import SNAPSHOT_COMPLETE, SNAPSHOT_PENDING, SNAPSHOT_RUNNING, SnapshotState
from ecst.consumer.store import StaleStateError, StateStore
from ecst.exceptions import RebuildError
from tests.unit.consumer.envelopes import envelope, row

TOPIC = "t.public.users"


def changes(first, last):
    out = []
    for n in range(first, last):
        key, value = envelope("u", n, 1000 + n, after=row(n, bio=f"change {n}"))
        out.append(decode(Record(TOPIC, 0, n, key, value)))
    return out


def test_a_swap_never_interleaves_with_a_live_batch(stack):
    url, drop = stack.new_database(f"state_{uuid.uuid4().hex[:10]}")
    live = StateStore(url)
    try:
        live.apply(changes(0, 10), {(TOPIC, 0): 10})          # the live state is at offset 10
        shadow = StateStore(url, namespace=SHADOW)
        shadow.apply(changes(0, 5), {(TOPIC, 0): 5})          # the rebuild has reached offset 5
        checked, go = threading.Event(), threading.Event()

        @sa_event.listens_for(live.engine, "after_cursor_execute")
        def pause_after_generation_check(conn, cursor, statement, *args):
            if "ecst_meta" in statement and not checked.is_set():
                checked.set()        # the live batch has read the generation...
                go.wait(timeout=3)   # ...and would now write, unless the swap waits for it

        outcome = {}

        def live_batch():
            try:
                live.apply(changes(10, 20), {(TOPIC, 0): 20})
                outcome["live"] = "applied"
            except StaleStateError:
                outcome["live"] = "stale"

        batch = threading.Thread(target=live_batch)
        batch.start()
        assert checked.wait(timeout=30)
        swap = threading.Thread(target=lambda: outcome.setdefault("swap", live.promote(shadow)))
        swap.start()
        swap.join(timeout=2)   # the swap must not finish while the batch is in progress...
        swapped_early = not swap.is_alive()
        go.set()
        batch.join(timeout=30)
        swap.join(timeout=30)
        assert not swapped_early
        # ...and afterwards the rebuild's offsets rule: changes 5..9 are read again, not lost
        assert outcome == {"live": "applied", "swap": ["users"]}
        assert live.stored_offsets() == {(TOPIC, 0): 5}
        assert sorted(r["id"] for r in live.rows("users")) == list(range(5))
    finally:
        live.close()
        drop()


def test_state_tables_on_postgres_have_no_column_defaults(stack):
    # the key is the source's: the state must not invent values (SQLAlchemy would make a lone
    # integer primary key a SERIAL, i.e. DEFAULT nextval(...) and a sequence)
    url, drop = stack.new_database(f"state_{uuid.uuid4().hex[:10]}")
    store = StateStore(url)
    try:
        store.apply(changes(0, 3), {(TOPIC, 0): 3})
        with store.engine.connect() as conn:
            defaults = conn.exec_driver_sql(
                "SELECT column_name, column_default FROM information_schema.columns "
                "WHERE table_name = 'users' AND column_default IS NOT NULL").all()
            sequences = conn.exec_driver_sql("SELECT relname FROM pg_class WHERE relkind = 'S'").all()
        assert (defaults, sequences) == ([], [])
    finally:
        store.close()
        drop()


def test_group_members_opening_one_fresh_state_database_at_once_all_start(stack):
    # a group's members start together on an empty database: each creates the ecst_* tables it
    # finds missing (without a lock, all but one failed: 'relation "ecst_offsets" already exists')
    url, drop = stack.new_database(f"state_{uuid.uuid4().hex[:10]}")
    barrier, errors, stores = threading.Barrier(6), [], []

    def open_store():
        barrier.wait()
        try:
            stores.append(StateStore(url))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == [] and len(stores) == 6
    finally:
        for s in stores:
            s.close()
        drop()


def test_a_stale_snapshot_transition_never_moves_the_snapshot_state_back_on_postgres(stack):
    # members sharing the state commit their snapshot transitions in any order (test_store.py)
    url, drop = stack.new_database(f"state_{uuid.uuid4().hex[:10]}")
    store = StateStore(url)
    try:
        pending = SnapshotState(SNAPSHOT_PENDING, 100, {0: 5, 1: 7})
        store.apply([], {(TOPIC, 1): 7}, {TOPIC: pending})
        store.apply([], {(TOPIC, 0): 1}, {TOPIC: SnapshotState(SNAPSHOT_RUNNING, 100)})  # stale first
        assert store.snapshot_states()[TOPIC] == pending
        store.mark_snapshot_complete(TOPIC)
        store.apply([], {}, {TOPIC: pending})
        assert store.snapshot_states()[TOPIC].state == SNAPSHOT_COMPLETE
    finally:
        store.close()
        drop()


def test_one_rebuild_at_a_time_per_postgres_state_and_the_lock_dies_with_its_session(stack):
    url, drop = stack.new_database(f"state_{uuid.uuid4().hex[:10]}")
    other_url, drop_other = stack.new_database(f"state_{uuid.uuid4().hex[:10]}")
    stores = [StateStore(url), StateStore(url), StateStore(other_url)]
    try:
        first = RebuildLock(stores[0].engine, stores[0].safe_url)
        first.acquire()
        second = RebuildLock(stores[1].engine, stores[1].safe_url, wait_s=0)
        with pytest.raises(RebuildError, match=r"another `ecst rebootstrap` is running on this state "
                                               r"\(.*held by PostgreSQL session \d+ from .* since 20"):
            second.acquire()
        with RebuildLock(stores[2].engine, "another database") as elsewhere:
            assert elsewhere.held  # the lock is per database
        first.release()
        second.acquire()
        # the holder's session ends without releasing (a crash): the lock goes with it
        assert second._conn is not None
        pid = second._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with stores[2].engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        first.wait_s = 10
        first.acquire()  # the killed session's lock is freed: taken within the wait
        assert first.held
        first.release()
        second.release()  # its connection is gone: nothing left to do, no error
    finally:
        for s in stores:
            s.close()
        drop()
        drop_other()

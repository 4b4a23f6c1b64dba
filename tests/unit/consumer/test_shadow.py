"""A rebuild's shadow copy on a real SQLite file: its bookkeeping, the swap, the discard."""

import pytest
from sqlalchemy import inspect

from ecst.consumer import shadow as shadow_copy
from ecst.consumer.shadow import SHADOW
from ecst.consumer.store import StateStore
from ecst.exceptions import StateStoreError
from tests.unit.consumer.envelopes import TOPIC, event, row


def database_tables(store):
    with store.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_promote_swaps_a_shadow_copy_in_and_fences_the_live_writer(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    live, writer = StateStore(url), StateStore(url)  # `writer`: a live consumer elsewhere
    live.apply([event("r", 1, 100, 0, after=row(1, bio="old")), event("r", 9, 100, 1, after=row(9))],
               {(TOPIC, 0): 2})
    shadow = StateStore(url, namespace="ecst_shadow__")
    shadow.apply([event("r", 1, 100, 0, after=row(1, bio="rebuilt")), event("r", 2, 100, 1, after=row(2))],
                 {(TOPIC, 0): 7})
    assert {r["id"] for r in live.rows("users")} == {1, 9}  # the shadow does not touch the live table

    assert live.promote(shadow) == ["users"]
    assert {r["id"]: r["bio"] for r in live.rows("users")} == {1: "rebuilt", 2: "hello"}
    assert live.stored_offsets() == {(TOPIC, 0): 7}
    assert not StateStore(url, namespace="ecst_shadow__").has_table("users")

    # the other writer's next batch is refused until it re-reads the state's offsets
    from ecst.consumer.store import StaleStateError

    with pytest.raises(StaleStateError):
        writer.apply([event("u", 1, 50, 3, after=row(1, bio="stale"))], {(TOPIC, 0): 4})
    writer.refresh()
    writer.apply([event("u", 1, 500, 7, after=row(1, bio="after swap"))], {(TOPIC, 0): 8})
    assert {r["id"]: r["bio"] for r in live.rows("users")}[1] == "after swap"
    for s in (live, writer):
        s.close()


def test_promote_moves_the_generation_on_and_leaves_no_shadow_table(url):
    live, shadow = StateStore(url), StateStore(url, namespace=SHADOW)
    shadow_copy.begin_rebuild(shadow, {(TOPIC, 0): 3}, {"mode": "replay", "phase": "snapshotting"})
    shadow.apply([event("r", 1, 100, 3, after=row(1))], {(TOPIC, 0): 4})
    shadow.mark_snapshot_complete(TOPIC)
    assert live.generation == 0
    assert shadow_copy.promote(live, shadow) == ["users"]
    assert live.generation == 1
    assert live.snapshot_states()[TOPIC].state == "complete"
    assert not any(t.startswith(SHADOW) for t in database_tables(live))
    assert shadow_copy.rebuild_in_progress(live) is None
    live.close()


def test_promote_takes_only_a_shadow_of_the_same_database(url, tmp_path):
    live = StateStore(url)
    elsewhere = StateStore(f"sqlite:///{tmp_path / 'other.db'}", namespace=SHADOW)
    for wrong in (StateStore(url), elsewhere):
        with pytest.raises(StateStoreError, match="shadow store of the same database"):
            shadow_copy.promote(live, wrong)
        wrong.close()
    live.close()


def test_the_rebuild_in_progress_is_read_from_the_shadow_without_creating_it(url):
    live = StateStore(url)
    assert shadow_copy.rebuild_in_progress(live) is None
    assert not any(t.startswith(SHADOW) for t in database_tables(live))  # a read creates nothing
    shadow = StateStore(url, namespace=SHADOW)
    shadow_copy.begin_rebuild(shadow, {(TOPIC, 0): 5}, {"mode": "blocking", "rows_applied": 0})
    assert shadow_copy.rebuild_in_progress(live) == {"mode": "blocking", "rows_applied": 0}
    assert shadow_copy.rebuild_record(shadow) == {"mode": "blocking", "rows_applied": 0}
    assert shadow.stored_offsets() == {(TOPIC, 0): 5}
    shadow_copy.save_rebuild_record(shadow, {"mode": "blocking", "rows_applied": 9})
    assert live.rebuild_in_progress() == {"mode": "blocking", "rows_applied": 9}
    assert live.rebuild_record() is None  # the live state's own record: the last rebuild finished
    live.close()
    shadow.close()


def test_discard_drops_the_shadow_tables_and_bookkeeping_but_not_the_live_state(url):
    live, shadow = StateStore(url), StateStore(url, namespace=SHADOW)
    live.apply([event("r", 1, 100, 0, after=row(1))], {(TOPIC, 0): 1})
    shadow_copy.begin_rebuild(shadow, {(TOPIC, 0): 0}, {"mode": "fresh"})
    shadow.apply([event("r", 2, 100, 0, after=row(2)), event("d", 3, 100, 1)], {(TOPIC, 0): 2})
    assert shadow.has_table("users")
    shadow_copy.discard(shadow)
    assert not shadow.has_table("users") and shadow.tables() == []
    assert shadow.stored_offsets() == {} and shadow.rebuild_record() is None
    assert shadow_copy.rebuild_in_progress(live) is None
    assert [r["id"] for r in live.rows("users")] == [1] and live.stored_offsets() == {(TOPIC, 0): 1}
    # the discarded shadow can start again: its table is created anew, not taken from a cache
    shadow.apply([event("r", 4, 100, 0, after=row(4))], {(TOPIC, 0): 1})
    assert [r["id"] for r in shadow.rows("users")] == [4]
    live.close()
    shadow.close()

"""The state store on a real SQLite file: guard, tombstones, offsets in the same transaction."""

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ecst.consumer.events import Record
from ecst.consumer.schema import POSITION
from ecst.consumer.store import StateStore
from ecst.exceptions import StateStoreError
from tests.unit.consumer.envelopes import ROW_FIELDS, TOPIC, envelope, event, row


def by_id(store):
    return {r["id"]: r for r in store.rows("users")}


def test_snapshot_then_changes_give_the_latest_row(store):
    # load 1: snapshot rows create the mirrored table with typed columns
    store.apply([event("r", 1, 100, 0, after=row(1)), event("r", 2, 100, 1, after=row(2))],
                {(TOPIC, 0): 2})
    rows = by_id(store)
    assert rows[1] == {"id": 1, "email": "user1@example.com", "balance": Decimal("10.50"),
                       "active": True, "birth_date": dt.date(2022, 1, 8),
                       "last_login": dt.datetime(2024, 1, 1, 0, 34, 7, 123456),
                       "created_at": dt.datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=dt.UTC),
                       "bio": "hello"}
    # load 2: an update to row 1 and a delete of row 2
    store.apply([event("u", 1, 200, 2, after=row(1, balance="99.99")), event("d", 2, 201, 3)],
                {(TOPIC, 0): 4})
    rows = by_id(store)
    assert list(rows) == [1] and rows[1]["balance"] == Decimal("99.99")
    assert store.stored_offsets() == {(TOPIC, 0): 4}


def test_older_events_never_move_a_row_backwards(store):
    store.apply([event("u", 1, 200, 5, after=row(1, bio="new"))], {(TOPIC, 0): 6})
    # a replayed snapshot row and a duplicate older update arrive later
    stats = store.apply([event("r", 1, 100, 0, after=row(1, bio="snapshot"))], {(TOPIC, 0): 1})
    store.apply([event("u", 1, 150, 3, after=row(1, bio="older"))], {(TOPIC, 0): 4})
    assert by_id(store)[1]["bio"] == "new"
    assert stats.stale == 1


def test_a_delete_tombstone_stops_an_older_create_from_resurrecting_the_row(store):
    store.apply([event("c", 1, 100, 0, after=row(1))], {(TOPIC, 0): 1})
    store.apply([event("d", 1, 300, 1)], {(TOPIC, 0): 2})
    # replay from offset 0: the create (position 100) comes again
    store.apply([event("c", 1, 100, 0, after=row(1))], {(TOPIC, 0): 1})
    assert by_id(store) == {}
    # a genuinely newer insert of the same key is applied
    store.apply([event("c", 1, 400, 3, after=row(1, bio="back"))], {(TOPIC, 0): 4})
    assert by_id(store)[1]["bio"] == "back"


def test_unchanged_toast_placeholder_keeps_the_stored_value(store):
    store.apply([event("c", 1, 100, 0, after=row(1, bio="a very long text"))], {(TOPIC, 0): 1})
    store.apply([event("u", 1, 200, 1, after=row(1, bio="__debezium_unavailable_value",
                                                  balance="1.00"))], {(TOPIC, 0): 2})
    r = by_id(store)[1]
    assert (r["bio"], r["balance"]) == ("a very long text", Decimal("1.00"))


def test_truncate_empties_the_table_up_to_its_position(store):
    store.apply([event("c", 1, 100, 0, after=row(1)), event("c", 2, 300, 1, after=row(2))],
                {(TOPIC, 0): 2})
    store.apply([event("t", 0, 200, 2)], {(TOPIC, 0): 3})
    assert list(by_id(store)) == [2]


def test_a_failing_batch_changes_neither_rows_nor_offsets(store):
    store.apply([event("c", 1, 100, 0, after=row(1))], {(TOPIC, 0): 1})
    bad = event("c", 2, 200, 1, after=row(2))
    with store.engine.begin() as conn:  # make the database reject row 2, mid-batch
        conn.execute(text("CREATE TRIGGER no_two BEFORE INSERT ON users WHEN NEW.id = 2 "
                          "BEGIN SELECT RAISE(ABORT, 'rejected'); END"))
    with pytest.raises(Exception, match="rejected"):
        store.apply([event("u", 1, 150, 1, after=row(1, bio="half")), bad], {(TOPIC, 0): 2})
    assert by_id(store)[1]["bio"] == "hello"
    assert store.stored_offsets() == {(TOPIC, 0): 1}


def test_a_new_source_column_is_added_to_the_mirrored_table(store):
    store.apply([event("c", 1, 100, 0, after=row(1))], {(TOPIC, 0): 1})
    fields = [*ROW_FIELDS, {"type": "string", "optional": True, "field": "nickname"}]
    store.apply([event("u", 1, 200, 1, after={**row(1), "nickname": "bob"}, fields=fields)],
                {(TOPIC, 0): 2})
    assert by_id(store)[1]["nickname"] == "bob"


def test_positions_are_stored_on_each_row(store):
    store.apply([event("c", 1, 123, 0, after=row(1))], {(TOPIC, 0): 1})
    with store.engine.connect() as conn:
        assert conn.execute(text(f"SELECT {POSITION} FROM users")).scalar_one() == 123


def test_unsupported_dialect_is_refused():
    with pytest.raises(StateStoreError, match="not a database URL"):
        StateStore("nonsense")


def test_another_process_reads_back_exact_types(store, tmp_path):
    store.apply([event("r", 1, 100, 0, after=row(1, balance="12345678.91"))], {(TOPIC, 0): 1})
    other = StateStore(f"sqlite:///{tmp_path / 'state.db'}")  # e.g. the service, or a restart
    try:
        r = {x["id"]: x for x in other.rows("users")}[1]
        assert r["balance"] == Decimal("12345678.91") and isinstance(r["balance"], Decimal)
        assert r["created_at"] == dt.datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
        # and it keeps applying with the same types
        other.apply([event("u", 1, 200, 1, after=row(1, balance="0.01"))], {(TOPIC, 0): 2})
        assert {x["id"]: x for x in other.rows("users")}[1]["balance"] == Decimal("0.01")
    finally:
        other.close()


def test_tombstones_are_purged_after_the_retention(store):
    store.apply([event("c", 1, 100, 0, after=row(1)), event("d", 1, 200, 1)], {(TOPIC, 0): 2})
    assert store.purge_tombstones(dt.datetime(2000, 1, 1)) == 0
    assert store.purge_tombstones(dt.datetime.now() + dt.timedelta(days=1)) == 1


def test_a_delete_known_only_from_a_kafka_tombstone_is_applied_in_offset_order(store):
    from ecst.consumer.events import tombstone_delete

    key, _ = envelope("d", 1, 0)
    gone = tombstone_delete(Record(TOPIC, 0, 5, key, None), table="users")
    assert (gone.op, gone.key, gone.position) == ("d", {"id": 1}, None)
    store.apply([event("c", 1, 100, 4, after=row(1))], {(TOPIC, 0): 5})
    # in one batch: the tombstone (offset 5), then a re-insert of the key (offset 6)
    store.apply([gone, event("c", 1, 300, 6, after=row(1, bio="again"))], {(TOPIC, 0): 7})
    assert by_id(store)[1]["bio"] == "again"
    store.apply([tombstone_delete(Record(TOPIC, 0, 7, key, None), table="users")], {(TOPIC, 0): 8})
    assert by_id(store) == {}


def test_deletes_for_a_table_never_created_still_leave_tombstones(store):
    store.apply([event("d", 1, 300, 0)], {(TOPIC, 0): 1})
    store.apply([event("c", 1, 100, 1, after=row(1))], {(TOPIC, 0): 2})  # an older create, replayed
    assert by_id(store) == {}


def test_a_streams_opening_change_wins_over_the_snapshot_in_a_later_batch(store):
    # the snapshot row and the opening transaction's update arrive in different batches (and the
    # store is reopened in between): the partition's floor is kept with the offsets
    store.apply([event("r", 944, 33151760, 0, after=row(944, bio="snapshot"), snapshot="true")],
                {(TOPIC, 0): 1})
    store.close()
    again = StateStore(store.url)
    stats = again.apply([event("u", 944, 33150000, 1, after=row(944, bio="committed after"),
                               sequence='[null,"33150000"]')], {(TOPIC, 0): 2})
    assert stats.stale == 0 and by_id(again)[944]["bio"] == "committed after"
    # a later transaction (its previous commit known) still wins; the replayed snapshot row loses
    again.apply([event("u", 944, 33152000, 2, after=row(944, bio="later"),
                       sequence='["33151900","33152000"]')], {(TOPIC, 0): 3})
    stats = again.apply([event("r", 944, 33151760, 0, after=row(944, bio="snapshot"), snapshot="true")],
                        {(TOPIC, 0): 3})
    assert stats.stale == 1 and by_id(again)[944]["bio"] == "later"
    again.close()


def test_a_rejected_batch_that_created_its_table_leaves_no_stale_table_behind(store):
    # The first batch creates the table and is then rejected (a value the database cannot take):
    # its transaction rolls back, CREATE TABLE included. Applied alone afterwards, the good
    # event must create the table again, not write to one that does not exist.
    good = event("r", 1, 100, 0, after=row(1), snapshot="true")
    bad = event("r", 2, 100, 1, after={**row(2), "email": {"not": "text"}}, snapshot="true")
    with pytest.raises(SQLAlchemyError):
        store.apply([good, bad], {(TOPIC, 0): 2})
    assert not store.has_table("users")
    store.apply([good], {(TOPIC, 0): 1})
    assert list(by_id(store)) == [1]


@pytest.mark.parametrize("writer", ["sqlite", "sqlalchemy"])
def test_a_stale_snapshot_transition_never_moves_the_snapshot_state_back(url, writer):
    # Replicas sharing one state (a group's members) each read the snapshot state, then write
    # their batch's transition: the member that read `first` may commit after the one that read
    # `last` made the snapshot pending, or after another marked it complete. Its stale "running"
    # (or "pending") must not replace the newer state, or the copy would never be complete.
    from ecst.consumer.snapshots import SNAPSHOT_COMPLETE, SNAPSHOT_PENDING, SNAPSHOT_RUNNING, SnapshotState

    store = StateStore(url, writer=writer)
    try:
        pending = SnapshotState(SNAPSHOT_PENDING, 100, {0: 5, 1: 7})
        store.apply([], {(TOPIC, 1): 7}, {TOPIC: pending})
        store.apply([], {(TOPIC, 0): 1}, {TOPIC: SnapshotState(SNAPSHOT_RUNNING, 100)})  # stale first
        assert store.snapshot_states()[TOPIC] == pending
        store.apply([], {}, {TOPIC: SnapshotState(SNAPSHOT_PENDING, 100, {0: 6, 1: 7})})  # targets again
        assert store.snapshot_states()[TOPIC].targets == {0: 6, 1: 7}
        store.mark_snapshot_complete(TOPIC)
        store.apply([], {}, {TOPIC: pending})  # stale last: complete stays complete
        assert store.snapshot_states()[TOPIC].state == SNAPSHOT_COMPLETE
        # a first store, and a later snapshot's first (higher position), still apply
        other = "t.public.other"
        store.apply([], {}, {other: SnapshotState(SNAPSHOT_RUNNING, 100)})
        store.apply([], {}, {other: SnapshotState(SNAPSHOT_PENDING, 100, {0: 3})})
        store.apply([], {}, {other: SnapshotState(SNAPSHOT_RUNNING, 200)})
        assert store.snapshot_states()[other] == SnapshotState(SNAPSHOT_RUNNING, 200, {})
    finally:
        store.close()

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ecst.consumer.events import ChangeEvent
from ecst.consumer.plan import group_by_unchanged, key_text, plan_batch


def ev(op, id_, pos, offset, table="users"):
    return ChangeEvent(op=op, table=table, key={"id": id_} if op != "t" else {},
                       after={"id": id_, "v": pos} if op in "cru" else None, position=pos,
                       topic="t", partition=0, offset=offset)


def test_several_events_on_one_key_collapse_to_the_highest_position():
    steps = plan_batch([ev("c", 1, 10, 0), ev("u", 1, 20, 1), ev("u", 2, 15, 2), ev("d", 1, 30, 3)])
    assert len(steps) == 1
    users = steps[0].tables["users"]
    assert [(e.op, e.key["id"], e.position) for e in users.upserts] == [("u", 2, 15)]
    assert [(e.op, e.key["id"], e.position) for e in users.deletes] == [("d", 1, 30)]


def test_a_replayed_older_event_does_not_win_inside_a_batch():
    steps = plan_batch([ev("u", 1, 20, 5), ev("c", 1, 10, 6)])  # redelivered create, later offset
    assert steps[0].tables["users"].upserts[0].position == 20


def test_equal_positions_keep_the_later_offset():
    steps = plan_batch([ev("r", 1, 10, 0), ev("r", 1, 10, 9)])
    assert steps[0].tables["users"].upserts[0].offset == 9


def test_truncate_splits_the_batch_in_order():
    steps = plan_batch([ev("c", 1, 10, 0), ev("t", 0, 11, 1), ev("c", 2, 12, 2)])
    assert [s.truncate.position if s.truncate else sorted(s.tables) for s in steps] == [
        ["users"], 11, ["users"]]


def test_tables_are_planned_separately():
    steps = plan_batch([ev("c", 1, 10, 0, "users"), ev("c", 1, 11, 1, "orders")])
    assert sorted(steps[0].tables) == ["orders", "users"]


def test_collapsing_carries_values_into_unchanged_toast_columns():
    from ecst.consumer.types import UNCHANGED

    insert = ChangeEvent(op="c", table="users", key={"id": 1}, after={"id": 1, "big": "B", "v": 1},
                         position=10, topic="t", partition=0, offset=0)
    update = ChangeEvent(op="u", table="users", key={"id": 1}, after={"id": 1, "big": UNCHANGED, "v": 2},
                         position=20, topic="t", partition=0, offset=1)
    for order in ([insert, update], [update, insert]):
        winner = plan_batch(order)[0].tables["users"].upserts[0]
        assert (winner.op, winner.after) == ("u", {"id": 1, "big": "B", "v": 2})


def test_the_kafka_tombstone_after_a_delete_keeps_the_deletes_position():
    # Debezium sends a delete event, then a Kafka tombstone for the same key (no position): the
    # delete's position must survive the collapse, so the store records it against resurrection
    delete = ev("d", 1, 300, 4)
    tombstone = dataclasses.replace(delete, position=None, offset=5, before=None)
    (step,) = plan_batch([ev("u", 1, 200, 3), delete, tombstone])
    assert step.tables["users"].deletes == [delete]
    # a tombstone alone (its delete event compacted away) deletes its key, in offset order
    (step,) = plan_batch([ev("u", 1, 200, 3), tombstone])
    assert step.tables["users"].deletes == [tombstone]


# ---- group_by_unchanged: one upsert statement per set of unchanged (TOAST) columns ----------
def upsert(id_, pos, op="u", **after):
    return ChangeEvent(op=op, table="users", key={"id": id_}, after={"id": id_, **after}, position=pos,
                       topic="t", partition=0, offset=pos)


def test_rows_leaving_the_same_columns_unchanged_share_a_group_in_order_of_first_appearance():
    from ecst.consumer.types import UNCHANGED

    events = [upsert(1, 10, big=UNCHANGED, v=1), upsert(2, 11, op="c", big="b", v=2),
              upsert(3, 12, big=UNCHANGED, v=3)]
    groups = group_by_unchanged(events, ["id", "big", "v"], "pos")
    assert [g.unchanged for g in groups] == [frozenset({"big"}), frozenset()]
    assert groups[0].rows == [{"id": 1, "big": None, "v": 1, "pos": 10},
                              {"id": 3, "big": None, "v": 3, "pos": 12}]
    assert groups[1].rows == [{"id": 2, "big": "b", "v": 2, "pos": 11}]
    assert (dict(groups[0].ops), dict(groups[1].ops)) == ({"u": 2}, {"c": 1})


def test_a_column_missing_from_the_row_takes_the_key_value_or_none():
    event = ChangeEvent(op="r", table="users", key={"id": 7, "region": "eu"}, after={"v": 1},
                        position=5, topic="t", partition=0, offset=0)
    (group,) = group_by_unchanged([event], ["id", "region", "v", "note"], "pos")
    assert group.rows == [{"id": 7, "region": "eu", "v": 1, "note": None, "pos": 5}]


def test_no_events_make_no_groups():
    assert group_by_unchanged([], ["id"], "pos") == []


# ---- key_text: the tombstones' key form, json.dumps's text whatever the key ---------------------

@settings(max_examples=300, deadline=None)
@given(key=st.dictionaries(
    st.sampled_from(["id", "Id_2", "_x", "é", "a b", 'q"', "1st", ""]) | st.text(max_size=4),
    st.integers() | st.booleans() | st.text(max_size=6) | st.floats() | st.none() | st.decimals()
    | st.dates() | st.uuids(),
    min_size=1, max_size=3))
def test_key_text_is_the_sorted_compact_json_of_the_key(key):
    assert key_text(key) == json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)

"""commit_order: a stream's opening transaction ranks above the snapshot it follows (issue 9)."""

import dataclasses

from ecst.consumer.events import ChangeEvent
from ecst.consumer.positions import commit_order

T = "t.public.users"


def ev(op, key, position, partition=0, offset=0, *, opening=False, anchor=False):
    return ChangeEvent(op, "users", {"id": key}, {"id": key} if op != "d" else None, position, T,
                       partition, offset, snapshot="true" if anchor else None, opening=opening,
                       anchor=anchor)


def test_an_opening_change_below_the_snapshot_is_raised_to_the_partitions_floor():
    # the topic as recorded on the real stack: a snapshot row at 33151760, then the first
    # streamed transaction, whose change LSN (33150000) is below it
    events = [ev("r", 944, 33151760, offset=0, anchor=True),
              ev("u", 944, 33150000, offset=1, opening=True)]
    ordered, floors = commit_order(events, {})
    assert [e.position for e in ordered] == [33151760, 33151760]  # a tie: the later event wins
    assert floors == {(T, 0): 33151760}
    assert ordered[0] is events[0] and dataclasses.replace(ordered[1], position=33150000) == events[1]


def test_the_floor_is_per_partition_and_read_from_earlier_batches():
    stored = {(T, 1): 500}
    events = [ev("u", 1, 400, partition=0, opening=True),   # partition 0 has no snapshot: as is
              ev("u", 2, 450, partition=1, opening=True),   # partition 1: raised to 500
              ev("u", 3, 650, partition=1, opening=True)]   # above the floor already: as is
    ordered, floors = commit_order(events, stored)
    assert [e.position for e in ordered] == [400, 500, 650]
    assert floors == {}  # no snapshot row in this batch: nothing to store


def test_only_opening_changes_move_and_the_floor_only_rises():
    events = [ev("r", 1, 900, anchor=True),
              ev("u", 2, 800),                       # a normal change: its commit is known
              ev("r", 3, 700, anchor=True),           # an older snapshot row: floor stays 900
              ev("d", 4, 850, opening=True),          # deletes rise like upserts
              ev("t", 0, 100, opening=True)]          # so do truncates
    ordered, floors = commit_order(events, {(T, 0): 600})
    assert [e.position for e in ordered] == [900, 800, 700, 900, 900]
    assert floors == {(T, 0): 900}


def test_events_without_position_are_left_alone():
    tomb = ev("d", 5, None, opening=True)
    ordered, _ = commit_order([ev("r", 1, 10, anchor=True), tomb], {})
    assert ordered[1] is tomb

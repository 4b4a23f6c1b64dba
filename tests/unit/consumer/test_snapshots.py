from ecst.consumer.events import ChangeEvent
from ecst.consumer.snapshots import SnapshotState, snapshot_transitions


def marker(snapshot, position, topic="t"):
    return ChangeEvent(op="r", table="users", key={"id": 1}, after={"id": 1}, position=position,
                       topic=topic, partition=0, offset=0, snapshot=snapshot)


ENDS = {"t": {0: 10, 1: 20}}


def test_first_starts_a_snapshot_and_last_makes_it_pending_with_end_offsets():
    assert snapshot_transitions([marker("first", 100)], {}, ENDS.get) == {
        "t": SnapshotState("running", 100)}
    assert snapshot_transitions([marker("last", 100)], {"t": SnapshotState("running", 100)},
                                ENDS.get) == {"t": SnapshotState("pending", 100, {0: 10, 1: 20})}


def test_first_read_after_last_of_the_same_snapshot_changes_nothing():
    # same batch, partitions read in the "wrong" order
    assert snapshot_transitions([marker("last", 100), marker("first", 100)], {}, ENDS.get) == {
        "t": SnapshotState("pending", 100, {0: 10, 1: 20})}
    # later batch
    pending = {"t": SnapshotState("pending", 100, {0: 10})}
    assert snapshot_transitions([marker("first", 100)], pending, ENDS.get) == {}
    assert snapshot_transitions([marker("first", 100)], {"t": SnapshotState("complete", 100)},
                                ENDS.get) == {}


def test_a_complete_copy_stays_complete_through_a_later_snapshot():
    # a blocking snapshot or a connector reset re-snapshots the table: the copy that streaming
    # kept current stays ready (zero downtime); a rebuild tracks the new snapshot in its shadow
    done = {"t": SnapshotState("complete", 100)}
    assert snapshot_transitions([marker("first", 500)], done, ENDS.get) == {}
    assert snapshot_transitions([marker("first", 500), marker("last", 500)], done, ENDS.get) == {}


def test_a_newer_snapshot_restarts_an_unfinished_one_and_plain_rows_change_nothing():
    running = {"t": SnapshotState("running", 100)}
    assert snapshot_transitions([marker("first", 500)], running, ENDS.get) == {
        "t": SnapshotState("running", 500)}
    assert snapshot_transitions([marker("true", 500), marker(None, 600)], running, ENDS.get) == {}

"""Waiting for a snapshot: Debezium's notifications end an incremental rebuild (COMPLETED) or fail
it (ABORTED, a scan that ended with an error), and so do a failed task or a snapshot never started."""

from types import SimpleNamespace

import pytest

from ecst.connectors import signals
from ecst.connectors.snapshot_source import SnapshotSource
from ecst.consumer import rebuild_wait
from ecst.consumer.rebuild_wait import ConnectorWatch, IncrementalCompletion, SnapshotStart
from ecst.exceptions import RebuildError, SnapshotFailedError
from tests.unit.connectors.fakes import FakeConnect

LOST = "io.debezium.DebeziumException: … but this is no longer available on the server.\n\tat x"


class Follower:
    signal_id = "ecst-1"

    def __init__(self, *batches):
        self.batches, self.closed = list(batches), False

    def poll(self):
        return self.batches.pop(0) if self.batches else []

    def close(self):
        self.closed = True


def note(type_, **data):
    return signals.Notification("ecst-1", "Incremental Snapshot", type_, data, 0)


def completion(*batches, condition=None, source=None):
    source = source or SnapshotSource(FakeConnect({"topic.prefix": "producer"}), "users")
    return IncrementalCompletion(Follower(*batches), source, condition, ["public.users"])


def test_the_completed_notification_ends_the_wait():
    done = completion([note(signals.STARTED)], [note(signals.IN_PROGRESS), note(signals.COMPLETED)])
    assert done() is False and done.started
    assert done() is True
    done.close()
    assert done.follower.closed


def test_an_aborted_snapshot_fails_the_rebuild():
    with pytest.raises(SnapshotFailedError, match="Debezium aborted incremental snapshot ecst-1.*nothing was "
                       "swapped in and the rebuild was discarded"):
        completion([note(signals.ABORTED)])()


def test_a_rejected_filter_says_to_correct_it():
    failed = note(signals.TABLE_SCAN_COMPLETED, status="SQL_EXCEPTION", scanned_collection="public.users")
    with pytest.raises(SnapshotFailedError, match=r"rejected incremental snapshot ecst-1: the scan of "
                       r"public.users ended with SQL_EXCEPTION.*Kafka Connect's log\); nothing was merged.*"
                       r"correct --where 'id <<< 3'"):
        completion([failed], condition="id <<< 3")()


def test_a_snapshot_never_started_is_reported_and_a_rerun_resumes(monkeypatch):
    monkeypatch.setattr(rebuild_wait, "START_TIMEOUT_S", -1.0)
    with pytest.raises(RebuildError, match="did not start snapshot ecst-1 within .*resumes waiting"):
        completion()()
    consumer = SimpleNamespace(snapshots={})
    source = SnapshotSource(FakeConnect({"topic.prefix": "producer"}), "users")
    watch = ConnectorWatch(source, "blocking")
    waiting = SnapshotStart(consumer, ["producer.public.users"], "blocking", watch)
    with pytest.raises(RebuildError, match="no blocking snapshot started"):
        waiting()
    consumer.snapshots["producer.public.users"] = "started"
    assert waiting() is False  # never ends the run itself


def test_a_task_that_fails_while_waiting_fails_the_rebuild(monkeypatch):
    monkeypatch.setattr(rebuild_wait, "WATCH_EVERY_S", -1.0)

    class Failed(FakeConnect):
        def status(self, name):
            return {"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "FAILED", "trace": LOST}]}

    watch = ConnectorWatch(SnapshotSource(Failed({"topic.prefix": "producer"}), "users"), "fresh")
    with pytest.raises(SnapshotFailedError, match="failed during the fresh snapshot.*Next: "):
        watch()

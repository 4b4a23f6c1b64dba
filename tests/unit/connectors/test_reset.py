"""A connector reset for a fresh snapshot: stop, drop the slot, forget the offsets, resume."""

import pytest

from ecst.connectors.reset import (
    connector_state,
    drop_incremental_snapshot,
    reset_connector,
    without_incremental_snapshot,
)
from ecst.exceptions import RebuildError
from tests.unit.connectors.fakes import FakeConn, FakeConnect

CONFIG = {"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "slot.name": "users"}


def test_a_reset_stops_drops_the_slot_forgets_offsets_and_resumes():
    client, conn = FakeConnect(CONFIG), FakeConn()
    reset_connector(client, "users", CONFIG, conn.opener())
    assert client.calls == [("stop", "users"), ("reset_offsets", "users"), ("resume", "users")]
    assert [p for _q, p in conn.executed] == [("users",), ("users",)]  # in use?, then drop
    assert "pg_drop_replication_slot" in conn.executed[-1][0]
    assert connector_state(client, "users") == "RUNNING"


def test_without_the_producer_database_the_slot_is_kept():
    client = FakeConnect(CONFIG)
    reset_connector(client, "users", CONFIG, None)
    assert client.calls == [("stop", "users"), ("reset_offsets", "users"), ("resume", "users")]


def test_a_snapshot_mode_that_would_not_snapshot_is_refused_before_anything_is_done():
    client = FakeConnect(CONFIG)
    with pytest.raises(RebuildError, match="snapshot.mode=no_data: a reset connector would not snapshot"):
        reset_connector(client, "users", {**CONFIG, "snapshot.mode": "no_data"}, None)
    assert client.calls == []


def test_a_connector_that_does_not_stop_is_reported(monkeypatch):
    class Stuck(FakeConnect):
        def stop(self, name):
            self.calls.append(("stop", name))  # and stays RUNNING

    clock = iter([0.0, 0.0, 61.0])
    monkeypatch.setattr("ecst.connectors.reset.time.monotonic", lambda: next(clock))
    monkeypatch.setattr("ecst.connectors.reset.time.sleep", lambda s: None)
    with pytest.raises(RebuildError, match="did not stop within 60 s"):
        reset_connector(Stuck(CONFIG), "users", CONFIG, None)


def test_only_offsets_holding_an_incremental_snapshot_change_and_keep_their_position():
    streaming = {"lsn_proc": 31953104, "lsn": 31953104, "txId": 1153, "ts_usec": 1796122745777029}
    snapshot = {"incremental_snapshot_correlation_id": "ecst-1", "incremental_snapshot_primary_key": "aced",
                "incremental_snapshot_maximum_key": "aced", "incremental_snapshot_collections":
                '[{"incremental_snapshot_collections_id":"public.users"}]'}
    offsets = [{"partition": {"server": "a"}, "offset": {**streaming, **snapshot}},
               {"partition": {"server": "b"}, "offset": dict(streaming)},
               {"partition": {"server": "c"}, "offset": None}]
    assert without_incremental_snapshot(offsets) == [{"partition": {"server": "a"}, "offset": streaming}]
    assert without_incremental_snapshot(offsets[1:]) == []


STREAMING = {"lsn_proc": 900, "lsn": 900, "txId": 7}
HELD = [{"partition": {"server": "a"}, "offset": {**STREAMING, "incremental_snapshot_correlation_id": "x",
                                                   "incremental_snapshot_collections": "[]"}}]


def test_dropping_a_held_snapshot_stops_alters_the_offsets_as_committed_and_resumes():
    connect = FakeConnect(CONFIG, tasks=("FAILED",))
    connect.held = [{"partition": {"server": "a"}, "offset": {**HELD[0]["offset"], "lsn": 950}}]
    assert drop_incremental_snapshot(connect, "users") == (True, True)
    assert connect.calls == [("stop", "users"),
                             ("alter_offsets", "users", [{"partition": {"server": "a"},
                                                          "offset": {**STREAMING, "lsn": 950}}]),
                             ("resume", "users")]


def test_a_stopped_connector_stays_stopped_and_offsets_holding_no_snapshot_are_left_alone():
    stopped = FakeConnect(CONFIG, state="STOPPED")
    stopped.held = HELD
    assert drop_incremental_snapshot(stopped, "users") == (True, False) and stopped.state == "STOPPED"
    assert [c[0] for c in stopped.calls] == ["alter_offsets"]
    # Debezium's failing start may have committed offsets without the snapshot: the tasks start again
    clean = FakeConnect(CONFIG, tasks=("FAILED",))
    clean.held = [{"partition": {"server": "a"}, "offset": STREAMING}]
    assert drop_incremental_snapshot(clean, "users") == (False, True)
    assert clean.calls == [("stop", "users"), ("resume", "users")]

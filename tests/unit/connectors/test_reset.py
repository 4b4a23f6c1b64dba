"""A connector reset for a fresh snapshot: stop, drop the slot, forget the offsets, resume."""

import pytest

from ecst.connectors.reset import connector_state, reset_connector
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

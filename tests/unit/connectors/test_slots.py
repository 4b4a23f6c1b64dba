"""The replication slot: waiting until a stopped connector released it, and dropping it."""

import pytest

from ecst.connectors.slots import drop_inactive_slot, slot_name, wait_for_slot_inactive
from ecst.exceptions import ConnectError
from tests.unit.connectors.fakes import FakeConn


def test_the_slot_of_a_postgres_connector_defaults_to_debeziums():
    pg = {"connector.class": "io.debezium.connector.postgresql.PostgresConnector"}
    assert slot_name(pg) == "debezium" and slot_name({**pg, "slot.name": "users"}) == "users"
    assert slot_name({"connector.class": "io.debezium.connector.mysql.MySqlConnector"}) is None


def test_waiting_for_a_released_slot_asks_until_no_walsender_uses_it(monkeypatch):
    monkeypatch.setattr("ecst.connectors.slots.time.sleep", lambda s: None)
    conn = FakeConn(active=[(1,), (1,), None])
    wait_for_slot_inactive(conn, "users")
    assert [p for _q, p in conn.executed] == [("users",)] * 3


def test_a_slot_still_in_use_after_the_timeout_is_an_error():
    with pytest.raises(ConnectError, match="replication slot users is still in use"):
        wait_for_slot_inactive(FakeConn(active=[(1,)]), "users", timeout_s=-1)


def test_only_an_inactive_slot_is_dropped():
    conn = FakeConn()
    drop_inactive_slot(conn, "users")
    (query, params), = conn.executed
    assert "pg_drop_replication_slot" in query and "NOT active" in query and params == ("users",)

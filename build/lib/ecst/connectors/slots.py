"""The replication slot behind a Debezium Postgres connector: its status, waiting for it to be
released, dropping it. An inactive slot that retains WAL is the classic way CDC fills a producer's disk."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from ecst.exceptions import ConnectError

POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"


@dataclass(frozen=True)
class SlotStatus:
    name: str
    exists: bool
    active: bool = False
    retained_wal_bytes: int | None = None


def slot_name(config: dict[str, str]) -> str | None:
    """The slot a connector config uses (Debezium's default is `debezium`), or None."""
    if config.get("connector.class") != POSTGRES_CONNECTOR:
        return None
    return config.get("slot.name", "debezium")


def slot_status(conninfo: str, slot: str, password: str | None = None) -> SlotStatus:
    with psycopg.connect(conninfo, password=password, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    if row is None:
        return SlotStatus(slot, exists=False)
    return SlotStatus(slot, exists=True, active=bool(row[0]), retained_wal_bytes=row[1])


def wait_for_slot_inactive(conn: Any, slot: str, timeout_s: float = 60.0) -> None:
    """Wait until no walsender uses `slot` (a stopped connector releases it a moment later)."""
    deadline = time.monotonic() + timeout_s
    while conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active",
                       (slot,)).fetchone():
        if time.monotonic() > deadline:
            raise ConnectError(f"replication slot {slot} is still in use after {timeout_s:.0f} s")
        time.sleep(0.5)


def drop_inactive_slot(conn: Any, slot: str) -> None:
    """Drop `slot` unless a walsender uses it (nothing happens when it does not exist)."""
    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 "WHERE slot_name = %s AND NOT active", (slot,))

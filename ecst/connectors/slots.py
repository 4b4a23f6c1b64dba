"""The replication slot behind a Debezium Postgres connector: is it active, how much WAL it
retains. An inactive slot that retains WAL is the classic way CDC fills a producer's disk."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

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

"""heartbeat.action.query keeps an idle table's slot from retaining the WAL of busy ones.

Two connectors, each on its own idle table, heartbeats every second; only one has the example
config's heartbeat.action.query (and its table in its publication). Another table of the
producer database, in no publication, is written hard. The slot of the connector without the
query retains all that WAL; the other's is released at Postgres's next running-transactions
record (about every 15 s)."""

import time
import uuid

from tests.integration.conftest import Capture

WRITES = 20  # each about 7 MB of WAL
QUERY = "heartbeat.action.query"


def _retained(capture):
    return capture.conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots "
        "WHERE slot_name = %s", (capture.definition.config["slot.name"],)).fetchone()[0]


def _streaming(capture):
    """Wait until the connector's snapshot (3 rows) is in its topic: the slot is streaming."""
    from ecst import kafka

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        begins, ends = kafka.topic_offsets(capture.stack.bootstrap, [capture.topic])
        if sum(ends.values()) - sum(begins.values()) >= 3:
            return
        time.sleep(0.5)
    raise AssertionError(f"{capture.topic} got no snapshot in 120 s")


def test_the_heartbeat_query_releases_wal_that_an_idle_table_would_retain(stack):
    with_query, without = (Capture(stack, uuid.uuid4().hex[:10]) for _ in range(2))
    assert QUERY in with_query.definition.config  # the example config's, unchanged
    for c in (with_query, without):
        c.definition.config["heartbeat.interval.ms"] = "1000"
    del without.definition.config[QUERY]
    busy = f"busy_{with_query.uid}"
    try:
        for c in (with_query, without):
            c.create(rows=3)
        # The heartbeat table is shared: in the publication without the query, the other
        # connector's heartbeats would move this slot too.
        without.conn.execute(f"ALTER PUBLICATION {without.definition.config['publication.name']} "
                             "DROP TABLE ecst_heartbeat")
        for c in (with_query, without):
            c.apply()
        for c in (with_query, without):
            _streaming(c)
        with_query.conn.execute(f"CREATE TABLE {busy} (id bigserial PRIMARY KEY, pad text)")
        for _ in range(WRITES):
            with_query.conn.execute(f"INSERT INTO {busy} (pad) SELECT repeat('x', 200) "
                                    "FROM generate_series(1, 20000)")
        written = _retained(without)
        deadline = time.monotonic() + 60
        while _retained(with_query) > 16 << 20 and time.monotonic() < deadline:
            time.sleep(1)
        kept, held = _retained(with_query), _retained(without)
        beat = with_query.conn.execute("SELECT ts FROM ecst_heartbeat WHERE id = 1").fetchone()
    finally:
        with_query.conn.execute(f"DROP TABLE IF EXISTS {busy}")
        for c in (with_query, without):
            c.close()
    assert written > 100 << 20, written  # the busy table wrote that much WAL past both slots
    assert held >= written  # without the query: all of it retained
    assert kept < 16 << 20, (kept, held)  # with it: released
    assert beat is not None  # the connector's role ran the query

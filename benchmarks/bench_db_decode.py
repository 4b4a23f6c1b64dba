"""Sizing a design ecst does not ship: decoding in the database instead of in Python (SQLite).

    .venv/bin/python benchmarks/bench_db_decode.py [--rows 20000] [--repeats 5]

The goals of issue 12 that remain open are bound by Python's CPU per record (docs/benchmark-notes.md,
"What bounds each goal"). This measures how much of it the decode and the apply could shed if the
database did the per-column work: side A is ecst (`decode` of every record, `StateStore.apply` in
batches of 2,000 into SQLite); side B hands SQLite each record's payload text, sliced out of the
JSON converter's bytes, and one prepared statement extracts and converts the columns with SQLite's
JSON functions (the Decimal through one Python SQL function, as SQLite cannot decode base64), with
the same newer-position guard in the upsert's WHERE and the offset written in the same transaction.

B is a prototype for sizing only: it handles the snapshot rows of the users table in these
envelopes, with the position taken as the snapshot LSN, and none of what makes ecst correct
beyond that (commit-ordered positions, deletes and their tombstones, unchanged-TOAST
placeholders, schema changes, dead-lettering). Both sides run in this process, in turn (A B A B),
each pass into a new database; the figure is CPU time per record (this process: Python and
SQLite), medians of the rounds and their ratio.
"""

from __future__ import annotations

import argparse
import base64
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, os.environ.get("ECST_BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

from ecst.consumer.events import Record, decode  # noqa: E402
from ecst.consumer.store import StateStore  # noqa: E402
from tests.unit.consumer.envelopes import envelope, row  # noqa: E402

BATCH = 2000
PAYLOAD = b'"payload":'

UPSERT = """
INSERT INTO users (id, email, balance, active, birth_date, last_login, created_at, bio, position)
SELECT json_extract(p, '$.after.id'), json_extract(p, '$.after.email'),
       decimal_b64(json_extract(p, '$.after.balance'), 2), json_extract(p, '$.after.active'),
       date(json_extract(p, '$.after.birth_date') * 86400, 'unixepoch'),
       strftime('%Y-%m-%d %H:%M:%f', json_extract(p, '$.after.last_login') / 1e6, 'unixepoch'),
       json_extract(p, '$.after.created_at'), json_extract(p, '$.after.bio'),
       json_extract(p, '$.source.lsn')
FROM (SELECT ? AS p) WHERE true
ON CONFLICT (id) DO UPDATE SET email = excluded.email, balance = excluded.balance,
    active = excluded.active, birth_date = excluded.birth_date, last_login = excluded.last_login,
    created_at = excluded.created_at, bio = excluded.bio, position = excluded.position
WHERE excluded.position > users.position
"""


def decimal_b64(value: str | None, scale: int) -> str | None:
    """Kafka Connect's Decimal (base64 of the big-endian unscaled integer) as decimal text."""
    if value is None:
        return None
    unscaled = int.from_bytes(base64.b64decode(value), "big", signed=True)
    return str(Decimal(unscaled).scaleb(-scale))


def side_ecst(records: list[Record]) -> float:
    """CPU seconds for ecst's decode and SQLite apply of `records`."""
    with tempfile.TemporaryDirectory() as folder:
        store = StateStore(f"sqlite:///{folder}/state.db")
        started = time.process_time()
        for i in range(0, len(records), BATCH):
            events = [e for e in (decode(r) for r in records[i:i + BATCH]) if e is not None]
            store.apply(events, {("t", 0): i + BATCH})
        spent = time.process_time() - started
        store.close()
    return spent


def side_database(records: list[Record]) -> float:
    """CPU seconds for the database-side decode of `records` (see the module's docstring)."""
    with tempfile.TemporaryDirectory() as folder:
        conn = sqlite3.connect(f"{folder}/state.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.create_function("decimal_b64", 2, decimal_b64, deterministic=True)
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, balance TEXT, active INTEGER,"
                     " birth_date TEXT, last_login TEXT, created_at TEXT, bio TEXT, position INTEGER)")
        conn.execute("CREATE TABLE offsets (topic TEXT, part INTEGER, next INTEGER,"
                     " PRIMARY KEY (topic, part))")
        started = time.process_time()
        for i in range(0, len(records), BATCH):
            payloads = []
            for r in records[i:i + BATCH]:
                value = r.value
                assert value is not None
                at = value.rfind(PAYLOAD)  # the converter writes the payload after the schema
                payloads.append((value[at + len(PAYLOAD):-1].decode(),))
            conn.execute("BEGIN")
            conn.executemany(UPSERT, payloads)
            conn.execute("INSERT OR REPLACE INTO offsets VALUES ('t', 0, ?)", (i + BATCH,))
            conn.execute("COMMIT")
        spent = time.process_time() - started
        stored = conn.execute("SELECT count(*) FROM users").fetchone()
        conn.close()
    assert stored == (len(records),), stored
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    records = [Record("t", 0, i, *envelope("r", i, 1000, after=row(i), snapshot="true"))
               for i in range(args.rows)]
    side_ecst(records[:BATCH])  # warm: imports, caches
    side_database(records[:BATCH])
    ecst, database = [], []
    for _ in range(args.repeats):
        ecst.append(side_ecst(records) / args.rows * 1e6)
        database.append(side_database(records) / args.rows * 1e6)
    a, b = statistics.median(ecst), statistics.median(database)
    for name, median, rounds in (("ecst decode + apply:  ", a, ecst),
                                 ("database-side decode: ", b, database)):
        print(f"{name} {median:6.1f} µs CPU per record  (rounds {', '.join(f'{x:.1f}' for x in rounds)})")
    print(f"ratio ecst / database: {a / b:6.2f}  (median of rounds' ratios "
          f"{statistics.median(x / y for x, y in zip(ecst, database, strict=True)):.2f})")


if __name__ == "__main__":
    main()

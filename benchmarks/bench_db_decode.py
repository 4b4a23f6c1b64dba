"""Sizing a design ecst does not ship: decoding in the database instead of in Python.

    .venv/bin/python benchmarks/bench_db_decode.py [--rows 20000] [--repeats 5] [--pg-url URL | --no-pg]

The goals of issue 12 that remain open are bound by Python's CPU per record (docs/benchmark-notes.md,
"What bounds each goal"). This measures how much of it the decode and the apply could shed if the
database did the per-column work: side A is ecst (`decode` of every record, `StateStore.apply` in
batches of 2,000 into SQLite); side B hands SQLite each record's payload text, sliced out of the
JSON converter's bytes, and one prepared statement extracts and converts the columns with SQLite's
JSON functions (the Decimal through one Python SQL function, as SQLite cannot decode base64), with
the same newer-position guard in the upsert's WHERE and the offset written in the same transaction.

The same into PostgreSQL (--pg-url, else the local stack's when it is up): A is ecst's PostgreSQL
writer; B COPYs the payload texts into a temporary jsonb table and merges them with one guarded
INSERT ... SELECT ... ON CONFLICT, its columns extracted and cast by the server. There the figures
are wall time, this process's CPU and the PostgreSQL server's CPU (every `postgres` process on the
machine, so run it with no other PostgreSQL work), per record. Before the rounds, both sides
write the same first batch and the script checks that their tables hold the same rows, every
column compared.

A third side is what ecst ships since (`decode_in_database`, docs/consumer.md): ecst's decode with
`defer`, then its PostgreSQL writer's decoding merge; keys, positions and every guarantee kept.

B is a prototype for sizing only: it handles the snapshot rows of the users table in these
envelopes, with the position taken as the snapshot LSN, and none of what makes ecst correct
beyond that (commit-ordered positions, deletes and their tombstones, unchanged-TOAST
placeholders, schema changes, dead-lettering). Both sides run in this process, in turn (A B A B),
each pass into a new database (SQLite) or an emptied one (PostgreSQL); the SQLite figure is CPU
time per record (this process: Python and SQLite), medians of the rounds and their ratio.
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
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, os.environ.get("ECST_BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

from ecst.consumer.events import Deferral, Record, decode  # noqa: E402
from ecst.consumer.pg_decode import row_check  # noqa: E402
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

PG_TABLE = """
CREATE TABLE users (id bigint PRIMARY KEY, email text, balance numeric(12, 2), active boolean,
    birth_date date, last_login timestamp, created_at timestamptz, bio text, position bigint)
"""
# Kafka Connect's Decimal: base64 of the big-endian two's-complement unscaled integer (<= 8 bytes here)
PG_DECIMAL = """
CREATE FUNCTION connect_decimal(b64 text, scale int) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
  SELECT ('x' || lpad(encode(b, 'hex'), 16, CASE WHEN get_byte(b, 0) >= 128 THEN 'f' ELSE '0' END))
         ::bit(64)::bigint::numeric / 10::numeric ^ scale
  FROM (SELECT decode(b64, 'base64') AS b) AS raw
$$
"""
PG_MERGE = """
INSERT INTO users (id, email, balance, active, birth_date, last_login, created_at, bio, position)
SELECT (a->>'id')::bigint, a->>'email', connect_decimal(a->>'balance', 2), (a->>'active')::boolean,
       DATE '1970-01-01' + (a->>'birth_date')::int,
       to_timestamp((a->>'last_login')::bigint / 1e6) AT TIME ZONE 'UTC',
       (a->>'created_at')::timestamptz, a->>'bio', (p->'source'->>'lsn')::bigint
FROM (SELECT p, p->'after' AS a FROM incoming) AS rows
ON CONFLICT (id) DO UPDATE SET email = excluded.email, balance = excluded.balance,
    active = excluded.active, birth_date = excluded.birth_date, last_login = excluded.last_login,
    created_at = excluded.created_at, bio = excluded.bio, position = excluded.position
WHERE excluded.position > users.position
"""


def postgres_cpu() -> float:
    """CPU seconds used so far by every process named postgres on this machine."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        if text[text.index("(") + 1:text.rindex(")")].startswith("postgres"):
            fields = text[text.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _libpq(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq takes it (no driver name)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _empty(url: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def _measured(run: Callable[[], None], n: int) -> dict[str, float]:
    """µs per record of `run`: wall, this process's CPU, PostgreSQL's CPU."""
    wall, cpu, server = time.perf_counter(), time.process_time(), postgres_cpu()
    run()
    return {"wall": (time.perf_counter() - wall) / n * 1e6,
            "client CPU": (time.process_time() - cpu) / n * 1e6,
            "server CPU": (postgres_cpu() - server) / n * 1e6}


def _user_rows(url: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(_libpq(url)) as conn:
        return conn.execute("SELECT id, email, balance, active, birth_date, last_login, created_at, bio"
                            " FROM users ORDER BY id").fetchall()


def pg_ecst(records: list[Record], url: str, defer: Deferral | None = None) -> dict[str, float]:
    """ecst's decode and PostgreSQL writer; with `defer` (`pg_decode.row_check`), as the consumer
    runs into a PostgreSQL state: the rows the server can decode are left to it."""
    _empty(url)
    store = StateStore(url)

    def run() -> None:
        for i in range(0, len(records), BATCH):
            events = [e for e in (decode(r, defer=defer) for r in records[i:i + BATCH]) if e is not None]
            store.apply(events, {("t", 0): i + BATCH})

    try:
        return _measured(run, len(records))
    finally:
        store.close()


def pg_database(records: list[Record], url: str) -> dict[str, float]:
    import psycopg

    _empty(url)
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute(PG_TABLE)
        conn.execute(PG_DECIMAL)
        conn.execute("CREATE TABLE offsets (topic text, part int, next bigint, PRIMARY KEY (topic, part))")
        conn.execute("CREATE TEMP TABLE incoming (p jsonb) ON COMMIT DELETE ROWS")
        conn.commit()

        def run() -> None:
            for i in range(0, len(records), BATCH):
                lines = []
                for r in records[i:i + BATCH]:
                    value = r.value
                    assert value is not None
                    at = value.rfind(PAYLOAD)
                    # COPY's text format: a backslash escapes, so JSON's own are doubled
                    lines.append(value[at + len(PAYLOAD):-1].replace(b"\\", b"\\\\"))
                with conn.cursor() as cur:
                    with cur.copy("COPY incoming (p) FROM STDIN") as copy:
                        copy.write(b"\n".join(lines) + b"\n")
                    cur.execute(PG_MERGE)
                    cur.execute("INSERT INTO offsets VALUES ('t', 0, %s) ON CONFLICT (topic, part) "
                                "DO UPDATE SET next = excluded.next", (i + BATCH,))
                conn.commit()

        figures = _measured(run, len(records))
        stored = conn.execute("SELECT count(*) FROM users").fetchone()
    assert stored == (len(records),), stored
    return figures


def _report(title: str, sides: dict[str, list[dict[str, float]]]) -> None:
    print(title)
    (a_name, a_rounds), (b_name, b_rounds) = sides.items()
    for metric in a_rounds[0]:
        a = statistics.median(r[metric] for r in a_rounds)
        b = statistics.median(r[metric] for r in b_rounds)
        rounds = "; ".join(f"{x[metric]:.1f} / {y[metric]:.1f}"
                           for x, y in zip(a_rounds, b_rounds, strict=True))
        print(f"  {metric:<11} {a_name} {a:6.1f}  {b_name} {b:6.1f} µs per record  ratio {a / b:5.2f}"
              f"  (rounds {rounds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pg-url", help="a PostgreSQL server to measure on (default: the local stack's)")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()
    records = [Record("t", 0, i, *envelope("r", i, 1000, after=row(i), snapshot="true"))
               for i in range(args.rows)]
    side_ecst(records[:BATCH])  # warm: imports, caches
    side_database(records[:BATCH])
    lite: dict[str, list[dict[str, float]]] = {"ecst": [], "database-side": []}
    for _ in range(args.repeats):
        lite["ecst"].append({"CPU": side_ecst(records) / args.rows * 1e6})
        lite["database-side"].append({"CPU": side_database(records) / args.rows * 1e6})
    _report("SQLite (this process)", lite)

    from benchmarks.bench_consumer import _pg_databases, local_pg_url

    server = None if args.no_pg else (args.pg_url or local_pg_url())
    if server is None:
        print("PostgreSQL: not measured (no --pg-url, and the local stack's PostgreSQL is not up)")
        return
    urls, drop = _pg_databases(server, ["ecst", "deferred", "db"])
    try:
        pg_ecst(records[:BATCH], urls["ecst"])
        pg_ecst(records[:BATCH], urls["deferred"], row_check)
        pg_database(records[:BATCH], urls["db"])
        ecst_rows, deferred_rows, db_rows = (_user_rows(urls[side]) for side in ("ecst", "deferred", "db"))
        assert ecst_rows == db_rows, "the database-side merge wrote other rows than ecst"
        assert ecst_rows == deferred_rows, "ecst's decoding in the database wrote other rows than in Python"
        pg: dict[str, list[dict[str, float]]] = {"ecst": [], "database-side": []}
        shipped: dict[str, list[dict[str, float]]] = {"ecst": [], "ecst deferred": []}
        for _ in range(args.repeats):
            pg["ecst"].append(pg_ecst(records, urls["ecst"]))
            shipped["ecst deferred"].append(pg_ecst(records, urls["deferred"], row_check))
            pg["database-side"].append(pg_database(records, urls["db"]))
        shipped["ecst"] = pg["ecst"]
        _report("PostgreSQL, the prototype", pg)
        _report("PostgreSQL, ecst decoding in Python / in the database (decode_in_database)", shipped)
    finally:
        drop()


if __name__ == "__main__":
    main()

"""Every Postgres type the consumer supports round-trips through Debezium, and `ecst verify` agrees
(issue 9): SQL NULL in json, jsonb and array columns stays SQL NULL in the state (it is not JSON
`null`), and verify compares each type the way the consumer stores it: no false drift on a table of
every supported type, and every planted difference found. An out-of-line TOASTed text that an update
leaves untouched (Debezium then sends its unchanged-value placeholder) must never be written."""

import datetime as dt
import os
import random
import subprocess
import time
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text, update
from sqlalchemy.types import JSON

from ecst import verify
from ecst.connectors.definition import parse_definition
from tests.integration.cli import ECST
from tests.integration.conftest import Capture

DDL = """
CREATE TYPE {t}_mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE {t} (
    id      bigint PRIMARY KEY,
    i2      smallint,  i4 integer,  r4 real,  f8 double precision,
    n_fixed numeric(12,3),  n_free numeric,  m money,
    b       boolean,  t text,  vc varchar(20),  ch char(5),
    d       date,  tm time,  tmtz timetz,  ts timestamp,  tstz timestamptz,
    iv      interval,
    u       uuid,  j json,  jb jsonb,
    ai      integer[],  at text[],
    by      bytea,
    e       {t}_mood,
    ip      inet,  cn cidr,  mac macaddr,  mac8 macaddr8,  rg int4range,
    ea      {t}_mood[],  ips inet[],
    big     text
);
ALTER TABLE {t} ALTER COLUMN big SET STORAGE EXTERNAL;
"""

ROW = """
INSERT INTO {t} VALUES (
    %(id)s, -32768, 2147483647, 1.5, 3.141592653589793,
    123456789.125, 98765432109876543210.0123456789, 1234.56,
    true, 'héllo ☃', 'short', 'ab',
    '1969-07-20', '23:59:59.999999', '10:15:30+02', '2024-02-29 12:34:56.789012',
    '2024-02-29 12:34:56.789012+05:30',
    '1 year 2 mons 3 days 04:05:06.78',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"k": [1, "two", null],  "b": 1, "a": 2}}',
    '{{"z": 1, "a": {{"b": false}}}}',
    ARRAY[1, NULL, 3], ARRAY['x', 'y z'],
    '\\x00ff10', 'happy',
    '192.168.1.5/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', '[1,5)',
    ARRAY['sad', 'happy']::{t}_mood[], ARRAY['::ffff:1.2.3.4', '10.1.2.3/16']::inet[],
    (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 150) g)
)
"""

NULLABLE_JSON = ("j", "jb", "ai", "at")  # stored as JSON documents in the state
NULL_ROW, JSON_NULL_ROW = 100, 101


@pytest.fixture
def typed(stack):
    uid = uuid.uuid4().hex[:10]
    c = Capture(stack, uid, table=f"types_{uid}")
    yield c
    c.close()
    c2 = stack.producer_conn()
    c2.execute(f"DROP TYPE IF EXISTS {c.table}_mood")
    c2.close()


def verify_state(capture: Capture, store) -> verify.Drift:
    """`ecst verify` as a library call: the producer table against the private state."""
    return verify.verify_table(capture.conn, f"public.{capture.table}",
                               verify.read_state(store, capture.table), capture.table)


def verify_cli(capture: Capture, store) -> subprocess.CompletedProcess:
    return subprocess.run([*ECST, "verify", "--state-url", store.url, "--topic", capture.topic],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())


def catch_up(capture: Capture, store, timeout_s: float = 90) -> None:
    """Consume until the state has the producer's keys and values of `i4` and `t` (the streamed
    statements below change one of them in every row they touch)."""
    deadline = time.monotonic() + timeout_s
    query = f'SELECT id, i4, t FROM "{capture.table}"'
    while True:
        capture.consumer(store).run(until_caught_up=True)
        want = {r[0]: r[1:] for r in capture.conn.execute(query).fetchall()}
        with store.engine.connect() as conn:
            have = {r[0]: tuple(r[1:]) for r in conn.execute(text(query))}
        if have == want:
            return
        assert time.monotonic() < deadline, f"state did not catch up: {have} != {want}"
        time.sleep(1)


def null_columns(store, table: str, key: int) -> set[str]:
    """The JSON-stored columns of state row `key` that are SQL NULL (asked with IS NULL)."""
    found = set()
    with store.engine.connect() as conn:
        for col in NULLABLE_JSON:
            q = text(f'SELECT count(*) FROM "{table}" WHERE id = :k AND "{col}" IS NULL')
            if conn.execute(q, {"k": key}).scalar_one():
                found.add(col)
    return found


def test_sql_null_in_json_jsonb_and_array_columns_stays_sql_null(typed, state_store):
    t = typed.table
    typed.conn.execute(DDL.format(t=t))
    typed.conn.execute(ROW.format(t=t), {"id": 1})
    typed.conn.execute(f"INSERT INTO {t} (id) VALUES ({NULL_ROW})")              # SQL NULLs
    typed.conn.execute(f"INSERT INTO {t} (id, j, jb) VALUES ({JSON_NULL_ROW}, 'null', 'null')")  # JSON nulls
    typed.prepare()
    typed.apply()
    typed.consumer(state_store).run(until_ready=True)
    # snapshot rows
    assert null_columns(state_store, t, NULL_ROW) == set(NULLABLE_JSON)
    assert null_columns(state_store, t, JSON_NULL_ROW) == {"ai", "at"}  # JSON null is not SQL NULL
    assert null_columns(state_store, t, 1) == set()

    # streamed rows: a new row of NULLs, a non-null document set to NULL, a NULL set to JSON null
    typed.conn.execute(f"INSERT INTO {t} (id) VALUES (200)")
    typed.conn.execute(f"UPDATE {t} SET i4 = 7, j = NULL, jb = NULL, ai = NULL, at = NULL WHERE id = 1")
    typed.conn.execute(f"UPDATE {t} SET i4 = 8, j = 'null', jb = 'null' WHERE id = {NULL_ROW}")
    catch_up(typed, state_store)
    assert null_columns(state_store, t, 200) == set(NULLABLE_JSON)
    assert null_columns(state_store, t, 1) == set(NULLABLE_JSON)
    assert null_columns(state_store, t, NULL_ROW) == {"ai", "at"}


# One planted difference per column, each on its own row: {column: (key, value written to the state)}.
# j and ai are planted as JSON null where the source has SQL NULL (issue 9, point 2), jb the other way.
PLANTS = {
    "i2": (2, -32767), "i4": (3, 1), "r4": (4, 2.5), "f8": (5, 3.14159),
    "n_fixed": (6, Decimal("123456789.126")), "n_free": (7, Decimal("98765432109876543210.0123456788")),
    "m": (8, Decimal("1234.57")), "b": (9, False), "t": (10, "hello ☃"), "vc": (11, "shorT"),
    "ch": (12, "ab"), "d": (13, dt.date(1969, 7, 21)), "tm": (14, dt.time(23, 59, 59, 999998)),
    "tmtz": (15, dt.time(8, 15, 31)), "ts": (16, dt.datetime(2024, 2, 29, 12, 34, 56, 789013)),
    "tstz": (17, dt.datetime(2024, 2, 29, 7, 4, 56, 789013, tzinfo=dt.UTC)),
    "iv": (18, dt.timedelta(microseconds=37091106780001)),  # Debezium's value for the row, + 1 µs
    "u": (19, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"), "j": (NULL_ROW, JSON.NULL),
    "jb": (JSON_NULL_ROW, None), "ai": (NULL_ROW, JSON.NULL), "at": (20, ["x", "y  z"]),
    "by": (21, b"\x00\xff\x11"), "e": (22, "ok"), "ip": (23, "192.168.1.6/24"), "cn": (24, "10.0.0.0/16"),
    "mac": (25, "08:00:2b:01:02:04"), "mac8": (26, "08:00:2b:01:02:03:04:06"), "rg": (27, "[1,6)"),
    "big": (28, "x"), "ea": (30, ["sad"]), "ips": (31, ["::ffff:102:304", "10.1.2.3/16"]),
}


def plant(store, table: str, plants: dict) -> None:
    state = store.load_table(table)
    with store.engine.begin() as conn:
        for col, (key, value) in plants.items():
            conn.execute(update(state).where(state.c.id == key).values({col: value}))


def test_every_type_round_trips_and_verify_finds_each_planted_difference(typed, state_store):
    t = typed.table
    typed.conn.execute(DDL.format(t=t))
    for key in range(1, 33):
        typed.conn.execute(ROW.format(t=t), {"id": key})                   # full rows
    typed.conn.execute(f"INSERT INTO {t} (id) VALUES ({NULL_ROW})")         # a row of NULLs
    typed.conn.execute(f"INSERT INTO {t} (id, j, jb) VALUES ({JSON_NULL_ROW}, 'null', 'null')")
    typed.prepare()
    typed.apply()
    typed.consumer(state_store).run(until_ready=True)
    ok = verify_cli(typed, state_store)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("no drift"), ok.stdout + ok.stderr

    # streamed changes: a new full row, then an update that leaves the TOASTed column alone
    typed.conn.execute(ROW.format(t=t), {"id": 50})
    typed.conn.execute(f"UPDATE {t} SET i4 = 7, t = 'changed' WHERE id IN (1, 50)")
    typed.conn.execute(f"UPDATE {t} SET b = NULL, i4 = 8 WHERE id = {NULL_ROW}")
    catch_up(typed, state_store)
    drift = verify_state(typed, state_store)
    assert not drift.drifted and not drift.not_compared, drift.summary()
    big = {r["id"]: r["big"] for r in state_store.rows(t)}
    assert len(big[1]) == 150 * 32 and big[1] == big[50]  # the stored value was kept, not replaced

    # the same documents in another key order are no drift; one changed value per column is
    plant(state_store, t, {"j": (29, {"a": 2, "b": 1, "k": [1, "two", None]}),
                           "jb": (29, {"a": {"b": False}, "z": 1})})
    assert not verify_state(typed, state_store).drifted
    plant(state_store, t, PLANTS)
    drift = verify_state(typed, state_store)
    found = sorted((key[0], col) for key, col, _, _ in drift.comparison.differing)
    assert found == sorted((key, col) for col, (key, _) in PLANTS.items()), drift.summary()
    assert not drift.comparison.missing and not drift.comparison.extra
    assert set(PLANTS) == set(column_names(typed)) - {"id"}  # every column was planted
    bad = verify_cli(typed, state_store)
    assert bad.returncode == 1 and "DRIFT" in bad.stdout, bad.stdout + bad.stderr


def column_names(capture: Capture) -> list[str]:
    rows = capture.conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                                (capture.table,)).fetchall()
    return [r[0] for r in rows]


def interval_rows(n: int) -> list[str]:
    """Intervals that stress Debezium's conversion: months (30.4375 days each in numeric mode),
    mixed signs, fractional seconds, and random ones."""
    fixed = ["1 year 2 mons 3 days 04:05:06.78", "-1 days +02:03:00.000001", "-1 year -1 mons",
             "0.1 seconds", "1 mon 0.3 seconds", "7 mons 12:00:00.123456", "-04:05:06.999999",
             "1000 years", "1 mon -00:00:00.000001", "12345 days 00:00:00.333333", "0", "-0.000001 seconds"]
    rnd = random.Random(9)
    for _ in range(n - len(fixed)):
        micros = rnd.randint(-2 * 86_400_000_000, 2 * 86_400_000_000)
        fixed.append(f"{rnd.randint(-300, 300)} mons {rnd.randint(-1000, 1000)} days "
                     f"{Decimal(micros).scaleb(-6)} seconds")
    return fixed


@pytest.mark.parametrize("mode", ["numeric", "string"])
def test_verify_compares_intervals_the_way_the_connector_sent_them(stack, tmp_path, mode):
    from ecst.consumer.store import StateStore

    uid = uuid.uuid4().hex[:10]
    capture = Capture(stack, uid, table=f"iv_{uid}")
    capture.doc["config"]["interval.handling.mode"] = mode
    capture.definition = parse_definition(capture.doc, environ={})
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        capture.conn.execute(f"CREATE TABLE {capture.table} "
                             "(id int PRIMARY KEY, i4 int, t text, iv interval)")
        values = interval_rows(80)
        with capture.conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {capture.table} VALUES (%s, 0, '', %s::interval)",
                            list(enumerate(values)))
        capture.prepare()
        capture.apply()
        capture.consumer(store).run(until_ready=True)
        capture.conn.execute(f"INSERT INTO {capture.table} VALUES (1000, 1, 's', '-3 years 5 mons 0.5 sec')")
        catch_up(capture, store)
        drift = verify_state(capture, store)
        assert not drift.drifted, drift.summary()

        state = store.load_table(capture.table)
        planted = dt.timedelta(microseconds=1) if mode == "numeric" else "P0Y0M0DT0H0M0.000001S"
        with store.engine.begin() as conn:
            conn.execute(update(state).where(state.c.id == 3).values(iv=planted))  # source: 0.1 seconds
        drift = verify_state(capture, store)
        assert [(k, c) for k, c, _, _ in drift.comparison.differing] == [((3,), "iv")], drift.summary()
    finally:
        store.close()
        capture.close()


def test_columns_verify_cannot_compare_are_named_not_reported_as_drift(capture, tmp_path):
    from ecst.consumer.store import StateStore

    t = capture.table
    capture.conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, i4 int, t text, pt point, bits bit(4))")
    capture.conn.execute(f"INSERT INTO {t} VALUES (1, 0, '', '(1,2)', B'1010')")
    capture.prepare()
    capture.apply()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        capture.consumer(store).run(until_ready=True)
        drift = verify_state(capture, store)
        assert not drift.drifted and set(drift.not_compared) == {"pt", "bits"}, drift.summary()
        assert "not compared" in drift.summary() and "pt" in drift.summary()
    finally:
        store.close()

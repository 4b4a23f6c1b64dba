"""The PostgreSQL writer against the reference, on a real PostgreSQL: the same batches through
`writes.BatchWriter` (SQLAlchemy Core) and `writes_postgres` (compiled statements by executemany,
and COPY into a staging table then a guarded merge) leave the same database.

Every table (state tables, offsets, tombstones, snapshots, column records) is compared column by
column, its column types included, each row in PostgreSQL's own text form (`row_to_json`), with
the batch timestamp held still; so are each batch's counts, and a rejected batch's error.
The fast writer runs twice: with its default threshold (small batches: executemany) and with
COPY for every batch, so both of its paths meet the reference.
"""

import datetime as dt
import uuid
from decimal import Decimal
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from sqlalchemy import JSON, text

from ecst.consumer import store as store_module
from ecst.consumer.outage import store_error
from ecst.consumer.snapshots import SNAPSHOT_PENDING, SnapshotState
from ecst.consumer.store import StateStore
from ecst.consumer.types import UNCHANGED
from ecst.consumer.writes import BatchWriter
from ecst.consumer.writes_postgres import PostgresBatchWriter, PostgresWriters
from tests.unit.consumer.test_writes_sqlite import NOW, TOPIC, batches, pair, wide

SIDES = ("reference", "fast", "copy")


@pytest.fixture(scope="module")
def databases(stack):
    """A database per writer; each example starts them empty."""
    made = {side: stack.new_database(f"writes_{side}_{uuid.uuid4().hex[:8]}") for side in SIDES}
    yield {side: url for side, (url, _drop) in made.items()}
    for _url, drop in made.values():
        drop()


def open_stores(databases):
    """Empty stores: the reference writer, the PostgreSQL writer, and it with COPY for every batch."""
    stores = {}
    for side, url in databases.items():
        reset = StateStore(url)
        with reset.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        reset.close()
        stores[side] = StateStore(url, writer="sqlalchemy" if side == "reference" else None)
    stores["copy"].writer = PostgresWriters(copy_min=1)
    return stores


def dump(store):
    """Every table: its columns (name, type, nullable) and its rows as PostgreSQL writes them."""
    with store.engine.connect() as conn:
        names = conn.exec_driver_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "ORDER BY table_name").scalars().all()
        out = {}
        for name in names:
            columns = conn.exec_driver_sql(
                "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = %(t)s ORDER BY ordinal_position",
                {"t": name}).all()
            rows = conn.exec_driver_sql(f'SELECT row_to_json(t)::text FROM "{name}" AS t').scalars().all()
            out[name] = (columns, sorted(rows))
        return out


def outcome(store, events, next_offsets, snapshots):
    try:
        stats = store.apply(events, next_offsets, snapshots)
    except Exception as exc:
        orig = getattr(exc, "orig", None)
        return "error", (type(exc), type(orig), store_error(exc, "x") is None)
    return "ok", (dict(stats.by_table_op), stats.stale)


def run_all(databases, plan, note=lambda _: None, copies=None):
    """Apply each batch of `plan` with every writer, comparing outcomes and databases after each;
    the reference's outcomes, in order (`note` hears what each batch did, `copies` gets whether
    each COPY was made or refused for values COPY would read otherwise)."""
    outcomes = []
    copies = [] if copies is None else copies
    stores = open_stores(databases)
    copy_upserts = PostgresBatchWriter._copy_upserts

    def spy(writer, table, name, upserts):
        done = copy_upserts(writer, table, name, upserts)
        copies.append(done)
        note("upserts copied" if done else "a COPY refused: executemany")
        return done

    try:
        with (mock.patch.object(store_module, "_utcnow", lambda: NOW),
              mock.patch.object(PostgresBatchWriter, "_copy_upserts", spy)):
            for events, next_offsets, snapshots in plan:
                expected = outcome(stores["reference"], events, next_offsets, snapshots)
                for side in ("fast", "copy"):
                    assert outcome(stores[side], events, next_offsets, snapshots) == expected, side
                reference = dump(stores["reference"])
                for side in ("fast", "copy"):
                    assert dump(stores[side]) == reference, side
                outcomes.append(expected)
                kind, detail = expected
                note(f"a batch {'rejected: ' + detail[0].__name__ if kind == 'error' else 'applied'}")
                if kind == "ok" and detail[1]:
                    note("stale events")
                if kind == "ok" and any(op == "d" for op, _ in detail[0]):
                    note("deletes")
    finally:
        for store in stores.values():
            store.close()
    return outcomes


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(plan=batches())
def test_the_postgres_writer_leaves_the_database_the_reference_writer_leaves(databases, plan):
    run_all(databases, plan, event)


FULL = {"txt": "hello", "num": Decimal("10.50"), "vnum": Decimal("3.1415"), "flag": True, "small": 7,
        "big": 2**62, "real": 0.1, "day": dt.date(2022, 1, 8), "ts_ms": dt.datetime(2024, 1, 1, 0, 34, 7),
        "ts_us": dt.datetime(2024, 1, 1, 0, 34, 7, 123456),
        "tstz": dt.datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=dt.UTC), "tod": dt.time(8, 30),
        "todtz": dt.time(8, 30, 0, 250000), "dur": dt.timedelta(days=1, microseconds=1),
        "doc": {"a": [1, None]}, "blob": b"\x00\x01", "tags": ["x", None], "attrs": {"k": 1},
        "uid": "0b5b4e0e-2f5a-4a57-9d5e-6c0a1d2e3f40"}
NULLS = dict.fromkeys(FULL)


def test_a_story_of_every_kind_of_change_leaves_the_same_database(databases):
    day = dt.date(2000, 1, 2)
    outcomes = run_all(databases, [
        # a snapshot load, NULLs in every column for one row
        ([wide("r", i, 100, i, **FULL) for i in range(1, 5)] + [wide("r", 7, 100, 5, **NULLS)]
         + [pair("c", "a", day, 100, 6)], {(TOPIC, 0): 7},
         {TOPIC: SnapshotState(SNAPSHOT_PENDING, 100, {0: 7})}),
        # TOAST placeholders, a JSON null and SQL NULLs, a column the event lacks, a stale replay
        ([wide("u", 1, 200, 7, **{**FULL, "txt": UNCHANGED, "blob": UNCHANGED, "doc": JSON.NULL}),
          wide("u", 2, 201, 8, **{**FULL, "tags": UNCHANGED, "doc": None, "num": None}),
          wide("u", 3, 202, 9, txt="only text"), wide("r", 4, 50, 10, **FULL)], {(TOPIC, 0): 11}, {}),
        # deletes with tombstones, one known only from a Kafka tombstone, a date-keyed delete
        ([wide("d", 1, 300, 11), wide("d", 2, None, 12), pair("d", "a", day, 300, 13)], {(TOPIC, 0): 14}, {}),
        # an older create replayed (the tombstone stops it), a newer one, a new source column
        ([wide("c", 1, 250, 14, **FULL), wide("c", 5, 400, 15, **{**FULL, "extra": "new"})],
         {(TOPIC, 0): 16}, {}),
        # a truncate between changes, then a change after it
        ([wide("u", 3, 410, 16, txt="before"), wide("t", 0, 420, 17), wide("c", 6, 430, 18, **FULL)],
         {(TOPIC, 0): 19, (TOPIC, 1): 3}, {}),
        # values PostgreSQL refuses (a NUL in a text, a bigint out of range) and one SQLAlchemy refuses
        ([wide("u", 6, 500, 19, txt="a\x00b")], {(TOPIC, 0): 20}, {}),
        ([wide("u", 6, 500, 19, small=2**20)], {(TOPIC, 0): 20}, {}),
        ([wide("u", 6, 500, 19, flag=2)], {(TOPIC, 0): 20}, {}),
        ([], {(TOPIC, 0): 20}, {}),
    ])
    assert [kind for kind, _ in outcomes] == ["ok"] * 5 + ["error"] * 3 + ["ok"]
    assert outcomes[1][1][1] == 1 and outcomes[3][1][1] == 1  # the stale replay, the stopped create
    # each rejection is one the runner takes for a bad batch: applied record by record, dead-lettered
    assert all(detail[2] for _, detail in outcomes[5:8])


def test_a_large_batch_is_copied_and_merged_through_the_guards(databases):
    """Batches over the threshold: a load, a stream with stale and tombstoned rows and TOAST
    placeholders, all equal to the reference's (the default writer takes its COPY path here)."""
    load = [wide("r", i, 100, i, **{**FULL, "txt": f"row {i}"}) for i in range(200)]
    deletes = [wide("d", i, 300, 200 + i) for i in range(0, 200, 7)]
    stream = ([wide("u", i, 200 + i % 3 * 100, 400 + i,  # some older than the deletes, some newer
                    **{**FULL, "txt": UNCHANGED if i % 5 == 0 else f"new {i}"}) for i in range(200)]
              + [wide("r", i, 50, 700 + i, **FULL) for i in range(200, 260)])
    replay = [wide("r", i, 100, 900 + i, **FULL) for i in range(150)]  # older than the state: stale
    copies = []
    outcomes = run_all(databases, [(load, {(TOPIC, 0): 200}, {}), (deletes, {(TOPIC, 0): 400}, {}),
                                   (stream, {(TOPIC, 0): 800}, {}), (replay, {(TOPIC, 0): 1050}, {})],
                       copies=copies)
    assert [kind for kind, _ in outcomes] == ["ok"] * 4
    assert copies and all(copies)  # both PostgreSQL writers took the COPY path
    assert outcomes[3][1] == ({("r", "wide"): 150 - 22}, 150)  # 22 stopped by tombstones, 128 by the guard
    assert outcomes[2][1][1] > 0  # stale: stopped by tombstones


def test_each_postgres_store_writes_with_the_postgres_writer(databases):
    stores = open_stores(databases)
    try:
        assert stores["reference"].writer is BatchWriter
        store = stores["fast"]
        with store.engine.begin() as conn:
            assert isinstance(store.writer(conn, store.state_tables, store.book, NOW), PostgresBatchWriter)
    finally:
        for store in stores.values():
            store.close()

"""The SQLite writer against the reference: the same batches through `writes.BatchWriter` (SQLAlchemy
Core) and `writes_sqlite` (prepared SQL) leave the same database, byte for byte.

Every column of every row of every table (state tables, offsets, tombstones, snapshots, column
types), NULLs included, is compared as SQLite stores it, with the batch timestamp held still; so are
each batch's counts, and a rejected batch's error (class, the driver's error and its message).
"""

import datetime as dt
import json
from decimal import Decimal
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Boolean, Date, DateTime, Interval, LargeBinary, Text, Time, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import SQLAlchemyError, StatementError

from ecst.consumer import store as store_module
from ecst.consumer.events import ChangeEvent
from ecst.consumer.outage import store_error
from ecst.consumer.snapshots import SNAPSHOT_PENDING, SNAPSHOT_RUNNING, SnapshotState
from ecst.consumer.store import StateStore
from ecst.consumer.types import UNCHANGED, ExactDecimal, Field, UtcDateTime, sql_type
from ecst.consumer.writes_sqlite import SqliteBatchWriter, bind_converter
from ecst.exceptions import StateStoreError
from tests.unit.consumer.test_jsontext import same

TOPIC = "p.public.wide"
NOW = dt.datetime(2026, 11, 30, 11, 22, 33, 456789)

WIDE = (
    Field("id", "int64", optional=False),
    Field("txt", "string"),
    Field("num", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "2"}),
    Field("vnum", "struct", "io.debezium.data.VariableScaleDecimal"),
    Field("flag", "boolean"),
    Field("small", "int16"),
    Field("big", "int64"),
    Field("real", "double"),
    Field("day", "int32", "io.debezium.time.Date"),
    Field("ts_ms", "int64", "io.debezium.time.Timestamp"),
    Field("ts_us", "int64", "io.debezium.time.MicroTimestamp"),
    Field("tstz", "string", "io.debezium.time.ZonedTimestamp"),
    Field("tod", "int64", "io.debezium.time.MicroTime"),
    Field("todtz", "string", "io.debezium.time.ZonedTime"),
    Field("dur", "int64", "io.debezium.time.MicroDuration"),
    Field("doc", "string", "io.debezium.data.Json"),
    Field("blob", "bytes"),
    Field("tags", "array", items=Field("", "string")),
    Field("attrs", "map"),
    Field("uid", "string", "io.debezium.data.Uuid"),
)
EXTRA = Field("extra", "string")  # a column the source adds later
PAIRS = (Field("name", "string", optional=False),
         Field("day", "int32", "io.debezium.time.Date", optional=False), Field("v", "string"))

offsets_st = st.builds(  # fixed UTC offsets (no time zone database needed)
    lambda m: dt.timezone(dt.timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60))
naive = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6)
decimals = st.decimals(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [Decimal("0"), Decimal("-0.00"), Decimal("1E+30"), Decimal("98765432109876543210.0123456789")])
VALUES = {
    "txt": st.text(max_size=8) | st.just(UNCHANGED) | st.just("__debezium_unavailable_value"),
    "num": decimals,
    "vnum": decimals,
    "flag": st.booleans() | st.sampled_from([0, 1]),
    "small": st.integers(-(2**15), 2**15 - 1),
    "big": st.integers(-(2**63), 2**63 - 1),
    "real": st.floats(allow_nan=False) | st.just(float("nan")),
    "day": st.dates(),
    "ts_ms": naive,
    "ts_us": naive | st.datetimes(timezones=offsets_st, min_value=dt.datetime(1, 1, 2),
                                  max_value=dt.datetime(9999, 12, 30)),
    "tstz": st.datetimes(timezones=st.just(dt.UTC) | offsets_st, min_value=dt.datetime(1, 1, 2),
                         max_value=dt.datetime(9999, 12, 30)) | naive,
    "tod": st.times() | st.times(timezones=offsets_st),
    "todtz": st.times(),
    "dur": st.timedeltas(min_value=dt.timedelta(days=-700_000), max_value=dt.timedelta(days=2_900_000)),
    "doc": json_values | st.just(JSON.NULL),
    "blob": st.binary(max_size=6) | st.just(UNCHANGED),
    "tags": st.lists(st.text(max_size=3) | st.none(), max_size=3) | st.just(UNCHANGED),
    "attrs": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    "uid": st.uuids().map(str),
    "extra": st.text(max_size=4),
}
# values a column's type refuses, which must fail the batch in the same way on both paths
WRONG = st.sampled_from([("txt", {"not": "text"}), ("day", "2024-01-01"), ("flag", 2), ("big", 2**64),
                         ("ts_ms", 17), ("dur", dt.timedelta(days=10**8)), ("tod", "noon")])


@st.composite
def wide_event(draw, offset):
    op = draw(st.sampled_from("crudddt" if offset % 5 else "cru"))
    position = draw(st.integers(1, 40))
    key = {"id": draw(st.integers(1, 6))}
    fields = WIDE + ((EXTRA,) if draw(st.integers(0, 5)) == 0 else ())
    after = None
    if op in "cru":
        after = {}
        for f in fields:
            if f.name == "id":
                if draw(st.integers(0, 6)):  # now and then a row without its key column: from the key
                    after["id"] = key["id"]
            elif draw(st.integers(0, 8)) == 0:
                continue  # a column the event does not carry
            else:
                after[f.name] = draw(st.none() | VALUES[f.name])
        if draw(st.integers(0, 30)) == 0:  # now and then a value its column refuses
            column, value = draw(WRONG)
            after[column] = value
    if op == "d" and draw(st.integers(0, 3)) == 0:
        position = None  # known only from a Kafka tombstone
    if op == "t":
        key = {}
    return ChangeEvent(op=op, table="wide", key=key, after=after, position=position, topic=TOPIC,
                       partition=draw(st.integers(0, 1)), offset=offset, fields=fields if op != "t" else (),
                       key_fields=(WIDE[0],) if op != "t" else (),
                       anchor=op == "r" and draw(st.booleans()), opening=op == "u" and draw(st.booleans()))


@st.composite
def pair_event(draw, offset):
    op = draw(st.sampled_from("cud"))
    key = {"name": draw(st.sampled_from(["a", "b", "é\"'"])), "day": draw(st.dates(dt.date(2000, 1, 1),
                                                                                      dt.date(2000, 1, 3)))}
    after = {**key, "v": draw(st.text(max_size=3) | st.just(UNCHANGED))} if op != "d" else None
    return ChangeEvent(op=op, table="pairs", key=key, after=after, position=draw(st.integers(1, 40)),
                       topic=TOPIC, partition=0, offset=offset, fields=PAIRS, key_fields=PAIRS[:2])


@st.composite
def batches(draw):
    out, offset = [], 0
    for _ in range(draw(st.integers(1, 6))):
        events = []
        for _ in range(draw(st.integers(0, 8))):
            offset += 1
            which = pair_event(offset) if draw(st.integers(0, 4)) == 0 else wide_event(offset)
            events.append(draw(which))
        snapshots = {}
        if draw(st.integers(0, 3)) == 0:
            state = draw(st.sampled_from([SNAPSHOT_RUNNING, SNAPSHOT_PENDING]))
            targets = {0: offset, 1: draw(st.integers(0, 9))}
            snapshots[TOPIC] = SnapshotState(state, draw(st.integers(0, 40)), targets)
        next_offsets = {(TOPIC, p): offset + 1 for p in draw(st.sets(st.integers(0, 1)))}
        out.append((events, next_offsets, snapshots))
    return out


def dump(store):
    """Every table as SQLite stores it: its DDL and its rows in rowid order, each value with its type."""
    with store.engine.connect() as conn:
        tables = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name").all()
        out = {}
        for name, ddl in tables:
            rows = conn.exec_driver_sql(f'SELECT * FROM "{name}" ORDER BY rowid').all()
            out[name] = (ddl, [tuple((type(v).__name__, v) for v in r) for r in rows])
        return out


def assert_same_dump(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0], name
        assert len(a[name][1]) == len(b[name][1]), name
        for ra, rb in zip(a[name][1], b[name][1], strict=True):
            assert len(ra) == len(rb) and all(
                ta == tb and (same(va, vb) or va == vb) for (ta, va), (tb, vb) in zip(ra, rb, strict=True)), (
                name, ra, rb)


def outcome(store, events, next_offsets, snapshots):
    try:
        stats = store.apply(events, next_offsets, snapshots)
    except Exception as exc:  # a SQLAlchemyError, or what the driver raises past it (OverflowError)
        orig = getattr(exc, "orig", None)
        return "error", (type(exc), type(orig), str(orig or exc))
    return "ok", (dict(stats.by_table_op), stats.stale)


def run_both(plan, note=lambda _: None):
    """Apply each batch of `plan` with both writers, comparing outcomes and databases after each;
    the outcomes, in order (`note` hears what each batch did)."""
    outcomes = []
    reference, fast = StateStore("sqlite://", writer="sqlalchemy"), StateStore("sqlite://")
    try:
        with mock.patch.object(store_module, "_utcnow", lambda: NOW):
            for events, next_offsets, snapshots in plan:
                expected = outcome(reference, events, next_offsets, snapshots)
                assert outcome(fast, events, next_offsets, snapshots) == expected
                assert_same_dump(dump(fast), dump(reference))
                outcomes.append(expected)
                kind, detail = expected
                note(f"a batch {'rejected: ' + detail[0].__name__ if kind == 'error' else 'applied'}")
                if kind == "ok" and detail[1]:
                    note("stale events")
                if kind == "ok" and any(op == "d" for op, _ in detail[0]):
                    note("deletes")
    finally:
        reference.close()
        fast.close()
    return outcomes


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(plan=batches())
def test_the_sqlite_writer_leaves_the_database_the_reference_writer_leaves(plan):
    run_both(plan, event)


def test_each_store_writes_with_the_writer_of_its_dialect():
    from ecst.consumer.writers import make_writer
    from ecst.consumer.writes import BatchWriter
    from ecst.consumer.writes_postgres import PostgresWriters

    reference, fast = StateStore("sqlite://", writer="sqlalchemy"), StateStore("sqlite://")
    try:
        assert reference.writer is BatchWriter
        with fast.engine.begin() as conn:
            assert isinstance(fast.writer(conn, fast.state_tables, fast.book, NOW), SqliteBatchWriter)
    finally:
        reference.close()
        fast.close()
    assert isinstance(make_writer("postgresql"), PostgresWriters)
    assert make_writer("postgresql", "sqlalchemy") is BatchWriter
    with pytest.raises(StateStoreError, match="cannot write to a postgresql"):
        make_writer("postgresql", "sqlite")
    with pytest.raises(StateStoreError, match="unknown state writer"):
        make_writer("sqlite", "fast")
    with pytest.raises(StateStoreError, match="cannot write to a sqlite"):
        make_writer("sqlite", "postgresql")


def wide(op, id_, position, offset, partition=0, **after):
    row = None if op in "dt" else {"id": id_, **after}
    return ChangeEvent(op=op, table="wide", key={} if op == "t" else {"id": id_}, after=row,
                       position=position, topic=TOPIC, partition=partition, offset=offset,
                       fields=WIDE if "extra" not in after else (*WIDE, EXTRA), key_fields=(WIDE[0],),
                       anchor=op == "r")


def pair(op, name, day, position, offset, v="x"):
    key = {"name": name, "day": day}
    return ChangeEvent(op=op, table="pairs", key=key, after=None if op == "d" else {**key, "v": v},
                       position=position, topic=TOPIC, partition=0, offset=offset, fields=PAIRS,
                       key_fields=PAIRS[:2])


def test_a_story_of_every_kind_of_change_leaves_the_same_database():
    full = {"txt": "hello", "num": Decimal("10.50"), "vnum": Decimal("3.1415"), "flag": True, "small": 7,
            "big": 2**62, "real": 0.1, "day": dt.date(2022, 1, 8), "ts_ms": dt.datetime(2024, 1, 1, 0, 34, 7),
            "ts_us": dt.datetime(2024, 1, 1, 0, 34, 7, 123456),
            "tstz": dt.datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=dt.UTC), "tod": dt.time(8, 30),
            "todtz": dt.time(8, 30, 0, 250000), "dur": dt.timedelta(days=1, microseconds=1),
            "doc": {"a": [1, None]}, "blob": b"\x00\x01", "tags": ["x", None], "attrs": {"k": 1},
            "uid": "0b5b4e0e-2f5a-4a57-9d5e-6c0a1d2e3f40"}
    day = dt.date(2000, 1, 2)
    outcomes = run_both([
        ([wide("r", i, 100, i, **full) for i in range(1, 5)] + [pair("c", "a", day, 100, 5)],
         {(TOPIC, 0): 6}, {TOPIC: SnapshotState(SNAPSHOT_PENDING, 100, {0: 6})}),
        # TOAST placeholders, a JSON null and SQL NULLs, a column the event lacks, a stale replay
        ([wide("u", 1, 200, 6, **{**full, "txt": UNCHANGED, "blob": UNCHANGED, "doc": JSON.NULL}),
          wide("u", 2, 201, 7, **{**full, "tags": UNCHANGED, "doc": None, "num": None}),
          wide("u", 3, 202, 8, txt="only text"), wide("r", 4, 50, 9, **full)], {(TOPIC, 0): 10}, {}),
        # deletes with tombstones, one known only from a Kafka tombstone, a date-keyed delete
        ([wide("d", 1, 300, 10), wide("d", 2, None, 11), pair("d", "a", day, 300, 12)], {(TOPIC, 0): 13}, {}),
        # an older create replayed (the tombstone stops it), a newer one, a new source column
        ([wide("c", 1, 250, 13, **full), wide("c", 5, 400, 14, **{**full, "extra": "new"})],
         {(TOPIC, 0): 15}, {}),
        # a truncate between changes, then a change after it
        ([wide("u", 3, 410, 15, txt="before"), wide("t", 0, 420, 16), wide("c", 6, 430, 17, **full)],
         {(TOPIC, 0): 18, (TOPIC, 1): 3}, {}),
        # a value SQLite refuses and one SQLAlchemy's processor refuses: the same errors
        ([wide("u", 6, 500, 18, txt={"not": "text"})], {(TOPIC, 0): 19}, {}),
        ([wide("u", 6, 500, 18, day="2024-01-01")], {(TOPIC, 0): 19}, {}),
        ([], {(TOPIC, 0): 19}, {}),
    ])
    assert [kind for kind, _ in outcomes] == ["ok"] * 5 + ["error", "error", "ok"]
    assert outcomes[1][1][1] == 1 and outcomes[3][1][1] == 1  # the stale replay, the stopped create
    assert [detail[0].__name__ for _, detail in outcomes[5:7]] == ["ProgrammingError", "StatementError"]


def test_a_rejected_batch_raises_what_the_runner_takes_for_a_bad_batch():
    """`Consumer._apply` applies a batch record by record on a SQLAlchemyError that is not a
    StateStoreError (`store_error` None): a refused value and a refused row both are."""
    store = StateStore("sqlite://")
    try:
        with pytest.raises(StatementError) as refused:  # a value the Date column's processor refuses
            store.apply([wide("c", 1, 1, 0, day="2024-01-01")], {(TOPIC, 0): 1})
        assert isinstance(refused.value.orig, TypeError) and store_error(refused.value, "x") is None
        store.apply([wide("c", 1, 1, 0, txt="ok")], {(TOPIC, 0): 1})
        with store.engine.begin() as conn:
            conn.execute(text("CREATE TRIGGER no_two BEFORE INSERT ON wide WHEN NEW.id = 2 "
                              "BEGIN SELECT RAISE(ABORT, 'rejected'); END"))
        with pytest.raises(SQLAlchemyError, match="rejected") as rejected:
            store.apply([wide("c", 2, 2, 1, txt="no")], {(TOPIC, 0): 2})
        assert store_error(rejected.value, "x") is None
        assert store.stored_offsets() == {(TOPIC, 0): 1}
    finally:
        store.close()


# --- the converters: what SQLAlchemy's bind processors do, for every state column type -------

SQLITE = sqlite.dialect()
TYPE_FIELDS = [Field("c", "string", logical) for logical in (
    None, "org.apache.kafka.connect.data.Decimal", "io.debezium.time.Date", "io.debezium.time.Timestamp",
    "io.debezium.time.ZonedTimestamp", "io.debezium.time.MicroTime", "io.debezium.time.MicroDuration",
    "io.debezium.data.Json")] + [Field("c", t) for t in ("int16", "int64", "double", "boolean", "bytes",
                                                         "array")]
any_value = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4), st.binary(max_size=4),
    decimals,
    st.dates(), naive, st.datetimes(timezones=st.just(dt.UTC) | offsets_st), st.times(),
    st.times(timezones=offsets_st), st.timedeltas(), json_values, st.just(JSON.NULL))


def convert_outcome(fn, value):
    try:
        return "value", fn(value)
    except Exception as exc:
        return "error", (type(exc), str(exc))


@pytest.mark.parametrize("column_type", [sql_type(f) for f in TYPE_FIELDS] + [
    ExactDecimal(), UtcDateTime(), DateTime(), Date(), Time(), Interval(), Boolean(), LargeBinary(), Text(),
    JSON(none_as_null=True)], ids=repr)
@settings(max_examples=150, deadline=None)
@given(value=any_value)
def test_a_column_converter_gives_what_sqlalchemy_binds(column_type, value):
    processor = column_type.dialect_impl(SQLITE).bind_processor(SQLITE) or (lambda v: v)
    converter = bind_converter(column_type, SQLITE) or (lambda v: v)
    mine, theirs = convert_outcome(converter, value), convert_outcome(processor, value)
    assert mine[0] == theirs[0]
    assert type(mine[1]) is type(theirs[1])
    assert (mine[1] == theirs[1] or same(mine[1], theirs[1])
            or json.dumps(mine[1], default=repr) == json.dumps(theirs[1], default=repr))


@pytest.mark.parametrize("column_type", [UtcDateTime(), DateTime(), Date(), Time()], ids=repr)
def test_date_and_time_columns_take_the_shortcut_not_sqlalchemys_processor(column_type):
    """The shortcuts are kept only where they write what SQLAlchemy writes for every probe value;
    a shortcut that wrote anything else would silently fall back to the slower processor."""
    converter = bind_converter(column_type, SQLITE)
    assert converter is not None and converter.__qualname__.startswith("_iso_"), converter

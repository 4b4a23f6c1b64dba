"""Which rows are left to PostgreSQL to decode (`pg_decode`), and what the rest of the consumer
does with them: `decode(..., defer=...)` keeps their JSON values, `materialized` decodes them
exactly as decode would have, a batch collapse and the SQLite and reference writers decode them
first. (The loop's handling of a deferred row Python cannot decode: test_runner_loop.py; the
server's decoding against Python's, on a real PostgreSQL: tests/integration/test_pg_decode.py.)"""

import dataclasses

import pytest

from ecst.consumer.events import Record, decode, materialized
from ecst.consumer.pg_decode import column_sql, row_check
from ecst.consumer.plan import plan_batch
from ecst.consumer.store import StateStore
from ecst.consumer.types import DEFAULT_PLACEHOLDER, UNCHANGED, Field
from ecst.exceptions import DeferredDecodeError, EventError
from tests.unit.consumer.envelopes import ROW_FIELDS, TOPIC, envelope, row

FIELDS = tuple(Field.from_schema(f) for f in ROW_FIELDS)


def record(op, id_, lsn, offset=0, **kw):
    return Record(TOPIC, 0, offset, *envelope(op, id_, lsn, **kw))


def test_every_users_column_is_covered_and_uncovered_types_are_not():
    assert all(column_sql(f) is not None for f in FIELDS)
    for schema in ({"type": "int64", "name": "io.debezium.time.NanoTimestamp"},
                   {"type": "string", "name": "io.debezium.data.Json"},
                   {"type": "int64", "name": "io.debezium.time.MicroTime"},
                   {"type": "bytes"}, {"type": "array", "items": {"type": "int32"}},
                   {"type": "struct", "fields": []},
                   {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
                    "parameters": {"scale": "x"}}):
        f = Field.from_schema({**schema, "field": "c"})
        assert column_sql(f) is None, schema
        assert row_check((*FIELDS, f), DEFAULT_PLACEHOLDER) is None  # one field uncovered: no row is


def test_the_row_check_refuses_values_python_and_the_server_would_read_apart():
    check = row_check(FIELDS, DEFAULT_PLACEHOLDER)
    assert check is not None and check(row(1)) and check(row(2, bio=None))
    refused = {
        "a TOAST placeholder": row(1, bio=DEFAULT_PLACEHOLDER),
        "a Decimal over 8 bytes": row(1, balance="123456789012345678901.23"),
        "a Decimal of 9 bytes (12 characters)": row(1, balance="-92233720368547758.08"),
        "a date after 9999": row(1, birth_date=2932897),
        "a date before year 1": row(1, birth_date=-719163),
        "a timestamp after 9999": row(1, last_login=253402300800000000),
        "an integer given as text": {**row(1), "id": "1"},
        "a boolean given as a number": {**row(1), "active": 1},
        "a zoned time not in UTC": row(1, created_at="2024-01-01T10:00:00+02:00"),
        "a zoned time beyond 9999": row(1, created_at="+10000-01-01T00:00:00Z"),
        "infinity": row(1, created_at="infinity"),
        "a fraction of 7 digits": row(1, created_at="2024-01-01T10:00:00.1234567Z"),
        "a column missing": {k: v for k, v in row(1).items() if k != "bio"},
        "a column more": {**row(1), "extra": 1},
    }
    assert [what for what, r in refused.items() if check(r)] == []
    assert row_check((*FIELDS, FIELDS[0]), DEFAULT_PLACEHOLDER) is None  # a name twice
    floats = row_check((Field("id", "int64"), Field("x", "double")), DEFAULT_PLACEHOLDER)
    assert floats is not None and floats({"id": 1, "x": 0.0}) and floats({"id": 1, "x": 3})
    assert not any(floats({"id": 1, "x": v}) for v in (-0.0, float("nan"), float("inf"), "1.5", True))


def test_a_deferred_event_keeps_its_json_and_materializes_to_what_decode_gives():
    rows = [row(1), row(2, balance="-0.01", bio=None, birth_date=-1, last_login=-1),
            row(3, balance="92233720368547758.07", created_at="0001-01-01T00:00:00Z"),
            row(5, balance="-92233720368547758.07"),
            row(4, birth_date=None, last_login=None)]
    for n, after in enumerate(rows):
        r = record("u", n, 100 + n, n, after=after, before=row(n))
        deferred = decode(r, defer=row_check)
        assert deferred.deferred is not None and deferred.after == after and deferred.before is None
        eager = decode(r)
        assert eager.deferred is None
        done = materialized(deferred)
        assert done == dataclasses.replace(eager, before=None) and done.after == eager.after
        assert done.deferred is None and materialized(eager) is eager


def test_rows_decode_refuses_stay_eager_and_other_ops_are_never_deferred():
    toasted = record("u", 1, 100, after=row(1, bio=DEFAULT_PLACEHOLDER))
    assert decode(toasted, defer=row_check).deferred is None
    assert decode(record("d", 1, 100, before=row(1)), defer=row_check).deferred is None
    with pytest.raises(EventError, match="birth_date"):  # refused by the check: decoded, and it fails
        decode(record("u", 1, 100, after=row(1, birth_date=2932897)), defer=row_check)


def test_materializing_a_value_python_cannot_decode_names_the_record():
    bad = decode(record("u", 1, 100, 7, after=row(1) | {"balance": "AAAAA"}), defer=row_check)
    assert bad.deferred is not None  # the check looks at its length only: the server would refuse it
    with pytest.raises(DeferredDecodeError) as caught:
        materialized(bad)
    assert caught.value.where == f"{TOPIC}[0]@7" and "balance" in caught.value.reason
    with pytest.raises(EventError) as eager:
        decode(record("u", 1, 100, 7, after=row(1) | {"balance": "AAAAA"}))
    assert caught.value.reason == str(eager.value)  # what decode would have said


def test_a_collapse_carries_unchanged_columns_from_a_deferred_row_decoded():
    older = decode(record("u", 1, 100, 0, after=row(1, bio="kept")), defer=row_check)
    newer = decode(record("u", 1, 200, 1, after=row(1, bio=DEFAULT_PLACEHOLDER, balance="3.00")),
                   defer=row_check)
    assert older.deferred is not None and newer.deferred is None and newer.after["bio"] is UNCHANGED
    [step] = plan_batch([older, newer])
    [(_, winner)] = step.tables["users"].keyed_upserts()
    assert winner.after["bio"] == "kept" and str(winner.after["balance"]) == "3.00"
    assert winner.after["birth_date"] == decode(record("u", 1, 100, after=row(1))).after["birth_date"]
    # the other way round: a deferred row wins and carries nothing (it has no placeholder)
    [step] = plan_batch([newer, decode(record("u", 1, 300, 2, after=row(1)), defer=row_check)])
    [(_, winner)] = step.tables["users"].keyed_upserts()
    assert winner.deferred is not None and winner.position == 300


@pytest.mark.parametrize("writer", ["sqlite", "sqlalchemy"])
def test_writers_that_do_not_take_deferred_rows_write_them_decoded(tmp_path, writer):
    records = [record("r", n, 100, n, after=row(n, balance=f"{n}.25"), snapshot="true") for n in range(80)]
    stores = [StateStore(f"sqlite:///{tmp_path / f'{side}.db'}", writer=writer) for side in ("a", "b")]
    stats = [stores[0].apply([decode(r, defer=row_check) for r in records], {(TOPIC, 0): 80}),
             stores[1].apply([decode(r) for r in records], {(TOPIC, 0): 80})]
    assert stats[0].by_table_op == stats[1].by_table_op
    assert stores[0].rows("users") == stores[1].rows("users") and len(stores[0].rows("users")) == 80
    assert stores[0].deferral is None  # and a SQLite store never asks for deferred rows
    for s in stores:
        s.close()

import datetime as dt
from decimal import Decimal

import pytest

from ecst.consumer.types import UNCHANGED, Field, canonical, convert
from ecst.exceptions import EventError
from tests.unit.consumer.envelopes import decimal_b64


def f(type_, logical=None, **params):
    return Field(name="c", type=type_, logical=logical, parameters=params)


@pytest.mark.parametrize("value", ["0.00", "10.50", "-12345.67", "9999999999.99", "-0.01"])
def test_precise_decimal_keeps_every_digit(value):
    field = f("bytes", "org.apache.kafka.connect.data.Decimal", scale="2")
    assert convert(decimal_b64(value), field) == Decimal(value)


def test_variable_scale_decimal():
    field = f("struct", "io.debezium.data.VariableScaleDecimal")
    assert convert({"scale": 4, "value": decimal_b64("3.1415", 4)}, field) == Decimal("3.1415")


def test_string_decimal_mode():
    assert convert("123.4500", f("string", "org.apache.kafka.connect.data.Decimal")) == Decimal("123.45")


def test_dates_and_times():
    assert convert(19000, f("int32", "io.debezium.time.Date")) == dt.date(2022, 1, 8)
    assert convert(-3579, f("int32", "io.debezium.time.Date")) == dt.date(1960, 3, 15)
    assert convert(1704069247123456, f("int64", "io.debezium.time.MicroTimestamp")) == dt.datetime(
        2024, 1, 1, 0, 34, 7, 123456)
    assert convert(1704069247123, f("int64", "io.debezium.time.Timestamp")) == dt.datetime(
        2024, 1, 1, 0, 34, 7, 123000)
    assert convert(1704069247123456789, f("int64", "io.debezium.time.NanoTimestamp")) == dt.datetime(
        2024, 1, 1, 0, 34, 7, 123456)
    assert convert("2024-01-01T10:00:00.5Z", f("string", "io.debezium.time.ZonedTimestamp")) == dt.datetime(
        2024, 1, 1, 10, 0, 0, 500000, tzinfo=dt.UTC)
    assert convert(3723000001, f("int64", "io.debezium.time.MicroTime")) == dt.time(1, 2, 3, 1)


def test_placeholder_means_unchanged_for_text_bytes_and_arrays():
    placeholder = "__debezium_unavailable_value"
    assert convert(placeholder, f("string")) is UNCHANGED
    import base64

    assert convert(base64.b64encode(placeholder.encode()).decode(), f("bytes")) is UNCHANGED
    array = Field(name="tags", type="array", items=Field(name="", type="string"))
    assert convert([placeholder], array) is UNCHANGED
    assert convert("custom", f("string"), placeholder="custom") is UNCHANGED


def test_bytes_and_nulls():
    assert convert("AAEC", f("bytes")) == b"\x00\x01\x02"
    assert convert(None, f("bytes")) is None


def test_undecodable_value_names_the_field():
    with pytest.raises(EventError, match="'c'.*MicroTimestamp"):
        convert("not-a-number", f("int64", "io.debezium.time.MicroTimestamp"))


def test_canonical_makes_both_databases_comparable():
    aware = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert canonical(aware) == dt.datetime(2024, 1, 1, 10)
    assert canonical(memoryview(b"ab")) == b"ab"
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})


def test_json_interval_timetz_uuid_enum():
    as_json = f("string", "io.debezium.data.Json")
    assert convert('{"b": [1, 2], "a": null}', as_json) == {"b": [1, 2], "a": None}
    assert convert(90061000001, f("int64", "io.debezium.time.MicroDuration")) == dt.timedelta(
        days=1, hours=1, minutes=1, seconds=1, microseconds=1)
    assert convert("08:30:00.25Z", f("string", "io.debezium.time.ZonedTime")) == dt.time(8, 30, 0, 250000)
    uuid = "0b5b4e0e-2f5a-4a57-9d5e-6c0a1d2e3f40"
    assert convert(uuid, f("string", "io.debezium.data.Uuid")) == uuid
    assert convert("gold", f("string", "io.debezium.data.Enum")) == "gold"


def test_arrays_convert_their_items():
    dates = Field(name="d", type="array", items=Field(name="", type="int32", logical="io.debezium.time.Date"))
    assert convert([0, 1], dates) == [dt.date(1970, 1, 1), dt.date(1970, 1, 2)]
    ints = Field(name="a", type="array", items=Field(name="", type="int32"))
    assert convert([1, None, 3], ints) == [1, None, 3]


def test_decimals_beyond_28_digits_stay_exact():
    big = "98765432109876543210.0123456789"
    precise = f("bytes", "org.apache.kafka.connect.data.Decimal", scale="10")
    assert str(convert(decimal_b64(big, 10), precise)) == big
    variable = f("struct", "io.debezium.data.VariableScaleDecimal")
    assert str(convert({"scale": 10, "value": decimal_b64(big, 10)}, variable)) == big


def test_json_converter_float_type_names_map_to_float_columns():
    from sqlalchemy import Float

    from ecst.consumer.types import sql_type

    assert isinstance(sql_type(Field("r", "float")), Float)
    assert isinstance(sql_type(Field("d", "double")), Float)


def test_sql_null_and_json_null_stay_apart_in_json_columns(tmp_path):
    """Issue 9: SQL NULL in a json, jsonb or array column is SQL NULL in the state; the JSON
    document `null` is the JSON text `null`. Checked with IS NULL on real SQLite."""
    from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, text
    from sqlalchemy.types import JSON

    from ecst.consumer.types import sql_type

    as_json = f("string", "io.debezium.data.Json")
    ints = Field(name="a", type="array", items=Field(name="", type="int32"))
    assert convert(None, as_json) is None and convert(None, ints) is None
    assert convert("null", as_json) is JSON.NULL
    json_items = Field(name="ja", type="array", items=as_json)
    assert convert(['{"a": 1}', "null", None], json_items) == [{"a": 1}, None, None]

    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True),
                  Column("j", sql_type(as_json)), Column("a", sql_type(ints)))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table), [
            {"id": 1, "j": convert(None, as_json), "a": convert(None, ints)},
            {"id": 2, "j": convert("null", as_json), "a": convert([1, None], ints)},
            {"id": 3, "j": convert('{"k": null}', as_json), "a": convert([], ints)},
        ])
        nulls = conn.execute(text("SELECT id, j IS NULL, a IS NULL FROM t ORDER BY id")).all()
        stored = conn.execute(text("SELECT j, a FROM t WHERE id = 2")).one()
    assert [tuple(r) for r in nulls] == [(1, 1, 1), (2, 0, 0), (3, 0, 0)]
    assert tuple(stored) == ("null", "[1, null]")


# (Postgres interval, its IntervalStyle=iso_8601 output, what Debezium 3.6 sent on the local stack:
#  interval.handling.mode=numeric, then =string)
DEBEZIUM_INTERVALS = [
    ("1 year 2 mons 3 days 04:05:06.78", "P1Y2M3DT4H5M6.78S", 37091106780000, "P1Y2M3DT4H5M6.78S"),
    ("-1 days +02:03:00.000001", "P-1DT2H3M0.000001S", -79019999999, "P0Y0M-1DT2H3M0.000001S"),
    ("-1 year -1 mons", "P-1Y-1M", -34187400000000, "P-1Y-1M0DT0H0M0S"),
    ("0.1 seconds", "PT0.1S", 100000, "P0Y0M0DT0H0M0.1S"),
    ("1 mon 0.3 seconds", "P1MT0.3S", 2629800300000, "P0Y1M0DT0H0M0.3S"),
    ("7 mons 12:00:00.123456", "P7MT12H0.123456S", 18451800123456, "P0Y7M0DT12H0M0.123456S"),
]


@pytest.mark.parametrize(("pg", "iso", "micros", "debezium_iso"), DEBEZIUM_INTERVALS)
def test_intervals_as_debezium_sends_them(pg, iso, micros, debezium_iso):
    from ecst.consumer.types import debezium_micros, parse_iso_interval

    parts = parse_iso_interval(iso)
    assert parse_iso_interval(debezium_iso) == parts
    assert debezium_micros(parts) == micros


def test_iso_interval_parsing():
    from ecst.consumer.types import IntervalParts, interval_micros, parse_iso_interval

    assert parse_iso_interval("PT0S") == IntervalParts(0, 0, 0)
    assert parse_iso_interval("PT-4H-5M-6.999999S") == IntervalParts(0, 0, -14_706_999_999)
    assert parse_iso_interval("P2W1D") == IntervalParts(0, 15, 0)
    for bad in ("", "P", "1 day", "P1.5Y"):
        with pytest.raises(ValueError):
            parse_iso_interval(bad)
    assert interval_micros(dt.timedelta(days=-1, microseconds=1)) == -86_399_999_999

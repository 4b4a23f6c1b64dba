"""Converters chosen once per field decode exactly as the per-value dispatch they replaced.

`reference_convert` is `ecst.consumer.types.convert` as it was before converters (with
`json.loads` for JSON columns): every field kind, every value (valid or not, the placeholder,
None) must give the same value of the same type, or the same error with the same message.
"""

import base64
import datetime as dt
import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON

from ecst.consumer.events import Record, decode
from ecst.consumer.types import (
    DEFAULT_PLACEHOLDER,
    EPOCH,
    EPOCH_DATE,
    UNCHANGED,
    Field,
    _decimal_from_bytes,
    convert,
    converter,
    passes_through,
)
from ecst.exceptions import EventError
from tests.unit.consumer.envelopes import compact, decimal_b64
from tests.unit.consumer.test_jsontext import same


def reference_convert(value, f, placeholder=DEFAULT_PLACEHOLDER):
    if value is None:
        return None
    if isinstance(value, str) and value == placeholder:
        return UNCHANGED
    if f is None:
        return value
    logical = f.logical
    try:
        if logical == "org.apache.kafka.connect.data.Decimal":
            if isinstance(value, str) and f.type == "bytes":
                return _decimal_from_bytes(value, int(f.parameters.get("scale", "0")))
            return Decimal(str(value))
        if logical == "io.debezium.data.VariableScaleDecimal":
            if isinstance(value, dict):
                return _decimal_from_bytes(value["value"], int(value["scale"]))
            return Decimal(str(value))
        if logical in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"):
            return EPOCH_DATE + dt.timedelta(days=int(value))
        if logical in ("io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp"):
            return EPOCH + dt.timedelta(milliseconds=int(value))
        if logical == "io.debezium.time.MicroTimestamp":
            return EPOCH + dt.timedelta(microseconds=int(value))
        if logical == "io.debezium.time.NanoTimestamp":
            return EPOCH + dt.timedelta(microseconds=int(value) // 1000)
        if logical == "io.debezium.time.ZonedTimestamp":
            return dt.datetime.fromisoformat(value).astimezone(dt.UTC)
        if logical == "io.debezium.time.ZonedTime":
            return dt.time.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
        if logical == "io.debezium.time.MicroDuration":
            return dt.timedelta(microseconds=int(value))
        if logical == "io.debezium.data.Json":
            document = json.loads(value)
            return JSON.NULL if document is None else document
        if logical in ("io.debezium.time.Time", "org.apache.kafka.connect.data.Time"):
            return (EPOCH + dt.timedelta(milliseconds=int(value))).time()
        if logical == "io.debezium.time.MicroTime":
            return (EPOCH + dt.timedelta(microseconds=int(value))).time()
        if logical == "io.debezium.time.NanoTime":
            return (EPOCH + dt.timedelta(microseconds=int(value) // 1000)).time()
        if f.type == "bytes":
            raw = base64.b64decode(value)
            return UNCHANGED if raw == placeholder.encode() else raw
        if f.type == "array":
            if value and all(v == placeholder for v in value):
                return UNCHANGED
            return [None if v is JSON.NULL else v
                    for v in (reference_convert(v, f.items, placeholder) for v in value)]
    except (ValueError, TypeError, KeyError, OverflowError) as exc:  # OverflowError: since the 64-bit fix
        raise EventError(
            f"field {f.name!r}: cannot decode {value!r} as {logical or f.type}: {exc}"
        ) from exc
    return value


LOGICALS = [
    None, "org.apache.kafka.connect.data.Decimal", "io.debezium.data.VariableScaleDecimal",
    "io.debezium.time.Date", "org.apache.kafka.connect.data.Date", "io.debezium.time.Timestamp",
    "org.apache.kafka.connect.data.Timestamp", "io.debezium.time.MicroTimestamp",
    "io.debezium.time.NanoTimestamp", "io.debezium.time.ZonedTimestamp", "io.debezium.time.ZonedTime",
    "io.debezium.time.MicroDuration", "io.debezium.data.Json", "io.debezium.time.Time",
    "org.apache.kafka.connect.data.Time", "io.debezium.time.MicroTime", "io.debezium.time.NanoTime",
    "io.debezium.data.Uuid", "io.debezium.data.Enum",
]
TYPES = ["int8", "int16", "int32", "int64", "float", "double", "boolean", "string", "bytes", "array",
         "map", "struct"]

scalar_fields = st.builds(
    Field, name=st.sampled_from(["c", "id"]), type=st.sampled_from(TYPES), logical=st.sampled_from(LOGICALS),
    parameters=st.sampled_from([{}, {"scale": "2"}, {"scale": "0"}, {"scale": "x"}]),
)
fields = st.one_of(
    scalar_fields,
    st.builds(Field, name=st.just("a"), type=st.just("array"), logical=st.none(),
              items=st.one_of(st.none(), scalar_fields)),
)
placeholders = st.sampled_from([DEFAULT_PLACEHOLDER, "custom", "0"])


def samples(placeholder):
    b64 = st.sampled_from([decimal_b64("10.50"), decimal_b64("-1.23", 4), "AAEC", "not base64!",
                           base64.b64encode(placeholder.encode()).decode(), "", "=", "é"])
    text = st.sampled_from([
        placeholder, "2024-01-01T10:00:00.123456Z", "2024-01-01T10:00:00+02:00", "08:30:00.25Z", "12.30",
        '{"b": [1, 2], "a": null}', "null", "[18446744073709551616]", "NaN", "{bad", "gold", "19000",
        "1704069247123456",
    ])
    scalar = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), text, b64,
        st.text(max_size=8),
    )
    structs = st.fixed_dictionaries({"scale": st.sampled_from([2, "4", "x"]), "value": b64})
    return st.one_of(scalar, structs, st.lists(st.one_of(scalar, st.just(placeholder)), max_size=4),
                     st.dictionaries(st.text(max_size=3), scalar, max_size=2))


def same_value(a, b):
    """`same`, with Decimals compared by their text (NaN, -0, the exponent) and items in lists."""
    if isinstance(a, Decimal) and type(a) is type(b):
        return str(a) == str(b)
    if isinstance(a, list) and type(a) is type(b):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a is b or same(a, b)


def outcome(fn):
    try:
        return "value", fn()
    except (EventError, ValueError, TypeError, KeyError, ArithmeticError, AttributeError) as exc:
        return "error", (type(exc), str(exc))


def assert_same(value, f, placeholder):
    expected = outcome(lambda: reference_convert(value, f, placeholder))
    for got in (outcome(lambda: converter(f, placeholder)(value)),
                outcome(lambda: convert(value, f, placeholder))):
        assert got[0] == expected[0], (value, f, got, expected)
        if got[0] == "value":
            assert same_value(got[1], expected[1]), (value, f, got, expected)
        else:
            assert got[1] == expected[1]


@settings(max_examples=800, deadline=None)
@given(f=st.one_of(st.none(), fields), placeholder=placeholders, data=st.data())
def test_a_converter_decodes_every_value_as_the_per_value_dispatch_did(f, placeholder, data):
    assert_same(data.draw(samples(placeholder)), f, placeholder)


@pytest.mark.parametrize("f", [None, Field("c", "string"), Field("c", "int64"), Field("c", "map"),
                               Field("c", "int64", "io.debezium.data.Enum")])
def test_fields_whose_values_pass_through_are_told(f):
    assert passes_through(f)
    for value in (None, 1, "x", [1], {"a": 1}, DEFAULT_PLACEHOLDER, 1.5):
        assert_same(value, f, DEFAULT_PLACEHOLDER)


def test_fields_that_decode_are_told():
    assert not passes_through(Field("c", "bytes"))
    assert not passes_through(Field("c", "array"))
    assert not passes_through(Field("c", "int32", "io.debezium.time.Date"))


# --- through the decoder: long integers and floats as json.loads reads them ----------------

def test_long_integers_and_special_floats_decode_exactly_with_and_without_a_schema():
    schema = {"type": "struct", "fields": [
        {"type": "int64", "optional": False, "field": "id"},
        {"type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal",
         "parameters": {"scale": "0"}, "field": "big"},
        {"type": "double", "optional": True, "field": "x"},
        {"type": "int64", "optional": True, "name": "io.debezium.time.NanoTimestamp", "field": "ns"},
        {"type": "string", "optional": True, "name": "io.debezium.data.Json", "field": "doc"}]}
    after = {"id": 1, "big": 123456789012345678901234567890, "x": 1e400, "ns": 1704069247123456789,
             "doc": '{"n": -9223372036854775809, "m": 18446744073709551616}'}
    source = {"table": "t", "lsn": 10, "sequence": '["9","10"]', "ts_ms": 18446744073709551616}
    payload = {"before": None, "after": after, "source": source, "op": "c"}
    key = compact({"schema": {"type": "struct", "fields": [{"type": "int64", "field": "id"}]},
                   "payload": {"id": 1}})
    envelope = {"type": "struct", "fields": [{**schema, "field": "before"}, {**schema, "field": "after"}]}
    with_schema = decode(Record("t", 0, 0, key, compact({"schema": envelope, "payload": payload})))
    assert with_schema.after == {"id": 1, "big": Decimal("123456789012345678901234567890"),
                                 "x": float("inf"), "ns": dt.datetime(2024, 1, 1, 0, 34, 7, 123456),
                                 "doc": {"n": -9223372036854775809, "m": 18446744073709551616}}
    assert type(with_schema.ts_ms) is int and with_schema.ts_ms == 18446744073709551616
    bare = decode(Record("t", 0, 0, compact({"id": 1}), compact(payload)))
    assert bare.after["big"] == 123456789012345678901234567890 and type(bare.after["big"]) is int
    assert bare.after["x"] == float("inf")
    nan_row = {**payload, "after": {"id": 1, "x": float("nan")}}
    nan = decode(Record("t", 0, 0, compact({"id": 1}), compact(nan_row)))
    assert nan.after["x"] != nan.after["x"]  # NaN, as json.loads reads it

"""Columns PostgreSQL decodes itself: the SQL that turns a change row's JSON value into the value
ecst's Python decoding would have written, for each Connect field type it covers. Pure.

Into a PostgreSQL state, the bulk writer can leave the per-column work to the server: the decoder
keeps a row's JSON values as they came (`events.decode(..., defer=...)`), the writer COPYs each
row as one `jsonb` document and one guarded `INSERT ... SELECT ... ON CONFLICT` merge converts
the columns (writes_postgres.py). Measured in docs/benchmark-notes.md ("Decoding in the
database"). This module says which fields that covers and how:

- `column_sql(f)`: the SQL expression of a field, over `{value}`, the column's value as text
  (`doc ->> name`, SQL NULL for a JSON null); None for a field it does not cover.
- `row_check(fields, placeholder)`: a function telling, for one row's JSON values, whether the
  server's conversion gives exactly what Python's would: every field covered, every value of a
  kind and range both read the same way (a date Python can hold, a Decimal of at most 8 bytes,
  a timestamp in UTC...), and no unchanged-TOAST placeholder. A row it refuses is decoded in
  Python, as every row was before.

The expressions are exact (integers and text, no floating point on a time), and
tests/integration/test_pg_decode.py checks each against Python's decoding on a real server, edge
values included. A value the server cannot read fails the batch's statement; the consumer then
applies that batch record by record, in Python, which dead-letters what it cannot decode.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Integer, SmallInteger, Text

from ecst.consumer.types import Field, passes_through, sql_type

RowCheck = Callable[[dict[str, Any]], bool]

_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_DATES = ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date")
_MILLIS = ("io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp")
_MICROS = "io.debezium.time.MicroTimestamp"
_ZONED = "io.debezium.time.ZonedTimestamp"
_INTEGERS = ("int8", "int16", "int32", "int64")
_FLOATS = ("float", "double", "float32", "float64")
_PLAIN_TYPES = frozenset((*_INTEGERS, *_FLOATS, "boolean", "string"))
_PLAIN_COLUMNS = ((SmallInteger, "smallint"), (Integer, "integer"), (BigInteger, "bigint"),
                  (Float, "double precision"), (Boolean, "boolean"), (Text, "text"))
# Python's date and datetime hold years 1 to 9999: beyond, its decoding fails (dead-letters),
# so the server must not write those values either.
_DAYS = (-719162, 2932896)  # 0001-01-01 and 9999-12-31, in days from 1970-01-01
_MICRO_RANGE = (-62135596800000000, 253402300799999999)
_MILLI_RANGE = (-62135596800000, 253402300799999)

_UTC_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z", re.ASCII)
# the unscaled integer of a Connect Decimal (base64 of its big-endian two's complement, 1-8 bytes)
# (the sign fills the hex to 16 digits; more than 8 bytes fail the bit(64) cast, never truncated)
_UNSCALED = ("('x' || repeat(CASE WHEN get_byte(decode({value}, 'base64'), 0) >= 128 THEN 'f' ELSE '0' END, "
             "16 - 2 * length(decode({value}, 'base64'))) || encode(decode({value}, 'base64'), 'hex'))"
             "::bit(64)::bigint")


def _plain(f: Field) -> str | None:
    """What a field Python passes through as it is (text, integers, floats, booleans, a logical
    type such as io.debezium.data.Uuid or Enum) is stored as: the SQL type its column has."""
    if not passes_through(f) or f.type not in _PLAIN_TYPES:
        return None
    column = sql_type(f)
    for kind, name in _PLAIN_COLUMNS:
        if type(column) is kind:
            return name
    return None


def column_sql(f: Field) -> str | None:
    """The SQL of field `f`'s value from `{value}` (its JSON value as text), None when not covered."""
    logical, kind = f.logical, f.type
    plain = _plain(f)
    if plain == "text":
        return "{value}"
    if plain is not None:
        return "({value})::" + plain
    if logical == _DECIMAL and kind == "bytes":
        scale = _scale(f)
        if scale is None:
            return None
        return f"({_UNSCALED}::text || 'E{-scale:+d}')::numeric"
    if logical in _DATES and kind == "int32":
        return "DATE '1970-01-01' + ({value})::integer"
    if logical == _MICROS and kind == "int64":
        return _since_epoch(1_000_000, "microsecond")
    if logical in _MILLIS and kind == "int64":
        return _since_epoch(1000, "millisecond")
    if logical == _ZONED and kind == "string":
        return "({value})::timestamptz"
    return None


def _since_epoch(per_second: int, unit: str) -> str:
    """A timestamp `{value}` units after 1970-01-01, exactly: whole seconds and the rest apart, so
    that no interval multiplication leaves the range a double holds exactly."""
    return (f"TIMESTAMP '1970-01-01' + (({{value}})::bigint / {per_second}) * INTERVAL '1 second' "
            f"+ mod(({{value}})::bigint, {per_second}) * INTERVAL '1 {unit}'")


def _scale(f: Field) -> int | None:
    try:
        scale = int(f.parameters.get("scale", "0"))
    except (TypeError, ValueError):
        return None
    return scale if -1000 <= scale <= 1000 else None


def _finite(v: Any) -> bool:
    """An integer, or a float a jsonb number holds: finite (orjson writes NaN and Infinity as
    null), and not -0.0 (a numeric has no negative zero)."""
    if v.__class__ is float:
        return math.isfinite(v) and (v != 0.0 or math.copysign(1.0, v) > 0)
    return v.__class__ is int


def _check(f: Field) -> Callable[[Any], bool]:
    """Whether one non-null JSON value of covered field `f` is read alike by the server and by
    Python: of the JSON type the field's schema says, in the range Python can hold."""
    logical = f.logical
    plain = _plain(f)
    if plain == "text":
        return lambda v: v.__class__ is str
    if plain == "boolean":
        return lambda v: v.__class__ is bool
    if plain == "double precision":
        return _finite
    if plain is not None:
        return lambda v: v.__class__ is int
    if logical == _DECIMAL:
        # 1 to 8 bytes: 4 to 12 base64 characters, 12 only with padding (9 bytes make 12 too)
        return lambda v: v.__class__ is str and (4 <= len(v) < 12 or (len(v) == 12 and v[-1] == "="))
    if logical in _DATES:
        low, high = _DAYS
        return lambda v: v.__class__ is int and low <= v <= high
    if logical == _MICROS or logical in _MILLIS:
        low, high = _MICRO_RANGE if logical == _MICROS else _MILLI_RANGE
        return lambda v: v.__class__ is int and low <= v <= high
    # a ZonedTimestamp in Debezium's UTC form: Python truncates a 7th digit of a fraction where
    # PostgreSQL rounds it, and reads years beyond 9999 not at all
    return lambda v: v.__class__ is str and _UTC_TEXT.fullmatch(v) is not None


def row_check(fields: Sequence[Field], placeholder: str) -> RowCheck | None:
    """How to tell the rows of a struct with these `fields` that the server can decode (see the
    module docstring); None when a field is not covered (or there are none): no row can be."""
    if not fields or len({f.name for f in fields}) != len(fields):
        return None
    checks: list[tuple[str, Callable[[Any], bool]]] = []
    for f in fields:
        if column_sql(f) is None:
            return None
        checks.append((f.name, _check(f)))
    names = frozenset(f.name for f in fields)

    def decodable(row: dict[str, Any]) -> bool:
        if row.keys() != names or placeholder in row.values():
            return False
        for name, check in checks:
            value = row[name]
            if value is not None and not check(value):
                return False
        return True

    return decodable

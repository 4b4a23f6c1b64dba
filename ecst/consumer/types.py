"""Kafka Connect / Debezium field schemas turned into Python values and SQL column types.

Pure functions only: `convert(value, field)` decodes one JSON value according to its Connect
field schema (logical type and parameters), `converter(field)` is the same decoding chosen once
for a field's many values, `sql_type(field)` picks the state-store column type.

NULL in a JSON-stored column (json, jsonb, arrays, maps, structs) is SQL NULL; a json/jsonb value
that is the JSON document `null` is stored as the JSON text `null` (`JSON.NULL`), so the two stay
apart as they are in the producer's table. `debezium_micros` and `parse_iso_interval` reproduce
Debezium's two `interval.handling.mode` representations, for `ecst.verify`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    Integer,
    Interval,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    Time,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import DateTime, Numeric, TypeDecorator, TypeEngine

from ecst.consumer import jsontext
from ecst.exceptions import EventError

EPOCH_DATE = dt.date(1970, 1, 1)
EPOCH = dt.datetime(1970, 1, 1)
DEFAULT_PLACEHOLDER = "__debezium_unavailable_value"


class _Unchanged:
    """Marks a column whose value Debezium did not send (unchanged TOASTed value)."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()


@dataclass(frozen=True)
class Field:
    """One column of a Connect struct schema: its name, Connect type and logical type."""

    name: str
    type: str
    logical: str | None = None
    optional: bool = True
    parameters: dict[str, str] = field(default_factory=dict)
    items: Field | None = None

    @classmethod
    def for_sample(cls, name: str, sample: Any) -> Field:
        """A field for a column seen without a schema (`schemas.enable=false`), by its value."""
        if isinstance(sample, bool):
            kind = "boolean"
        elif isinstance(sample, int):
            kind = "int64"
        elif isinstance(sample, float):
            kind = "double"
        elif isinstance(sample, (list, dict)):
            kind = "array" if isinstance(sample, list) else "struct"
        else:
            kind = "string"
        return cls(name=name, type=kind)

    def to_schema(self) -> dict[str, Any]:
        """The inverse of `from_schema` (what the state store records per column)."""
        out: dict[str, Any] = {"field": self.name, "type": self.type, "optional": self.optional}
        if self.logical:
            out["name"] = self.logical
        if self.parameters:
            out["parameters"] = self.parameters
        if self.items is not None:
            out["items"] = self.items.to_schema()
        return out

    @classmethod
    def from_schema(cls, schema: dict[str, Any]) -> Field:
        """Build from one entry of a Connect struct schema's `fields` list."""
        items = schema.get("items")
        return cls(
            name=schema.get("field", ""),
            type=schema.get("type", "string"),
            logical=schema.get("name"),
            optional=bool(schema.get("optional", True)),
            parameters=dict(schema.get("parameters") or {}),
            items=cls.from_schema(items) if isinstance(items, dict) else None,
        )


def _b64decode(value: Any) -> bytes:
    """`base64.b64decode(value)`: the same bytes and errors, a text decoded without its wrapper."""
    return binascii.a2b_base64(value) if value.__class__ is str else base64.b64decode(value)


def _decimal_from_bytes(b64: str, scale: int) -> Decimal:
    unscaled = int.from_bytes(_b64decode(b64), "big", signed=True)
    return Decimal(f"{unscaled}E{-scale}")  # exact at any precision (scaleb rounds to 28 digits)


Converter = Callable[[Any], Any]
"""One field's `convert`, chosen once: `converter(f, p)(value)` is `convert(value, f, p)`."""

_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_DATES = ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date")
_MILLI_TIMESTAMPS = ("io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp")
_MILLI_TIMES = ("io.debezium.time.Time", "org.apache.kafka.connect.data.Time")


def convert(value: Any, f: Field | None, placeholder: str = DEFAULT_PLACEHOLDER) -> Any:
    """Decode one JSON value of field `f` to its Python value (Decimal, datetime, bytes, ...).

    Returns `UNCHANGED` for Debezium's unchanged-TOAST placeholder. With no schema (`f` None,
    `schemas.enable=false`) the JSON value is returned as it is. To decode many values of one
    field, take its `converter` once.
    """
    return converter(f, placeholder)(value)


def passes_through(f: Field | None) -> bool:
    """True when `convert` returns every value of `f` as it is, the placeholder aside."""
    return f is None or _decoder(f, DEFAULT_PLACEHOLDER) is None


def converter(f: Field | None, placeholder: str = DEFAULT_PLACEHOLDER) -> Converter:
    """The function that decodes values of field `f` (see `convert`), its logical type and
    parameters looked at once rather than for every value."""
    decode = None if f is None else _decoder(f, placeholder)
    if decode is None:  # a value passed through: only the placeholder is told apart

        def plain(value: Any) -> Any:
            return UNCHANGED if isinstance(value, str) and value == placeholder else value

        return plain
    assert f is not None
    what = f.logical or f.type

    def convert_value(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and value == placeholder:
            return UNCHANGED
        try:
            return decode(value)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise EventError(f"field {f.name!r}: cannot decode {value!r} as {what}: {exc}") from exc

    return convert_value


def _decoder(f: Field, placeholder: str) -> Converter | None:
    """How a value of `f` (neither None nor the placeholder) is decoded; None: as it is. It may raise
    ValueError, TypeError, KeyError or OverflowError, which `converter` reports with the field's name."""
    logical = f.logical
    if logical == _DECIMAL:
        if f.type != "bytes":
            return _decimal_from_text
        scale_text = f.parameters.get("scale", "0")
        try:
            scale: int | None = int(scale_text)
        except (ValueError, TypeError):
            scale = None  # each value then fails as it would have

        def decimal(value: Any) -> Any:
            if isinstance(value, str):
                return _decimal_from_bytes(value, int(scale_text) if scale is None else scale)
            return Decimal(str(value))

        return decimal
    if logical == "io.debezium.data.VariableScaleDecimal":
        return _variable_scale_decimal
    if logical in _DATES:
        return _date
    if logical in _MILLI_TIMESTAMPS:
        return _milli_timestamp
    if logical == "io.debezium.time.MicroTimestamp":
        return _micro_timestamp
    if logical == "io.debezium.time.NanoTimestamp":
        return _nano_timestamp
    if logical == "io.debezium.time.ZonedTimestamp":
        return _zoned_timestamp
    if logical == "io.debezium.time.ZonedTime":  # timetz: Debezium normalises to UTC
        return _zoned_time
    if logical == "io.debezium.time.MicroDuration":  # interval (months approximated)
        return _micro_duration
    if logical == "io.debezium.data.Json":
        return _json_document
    if logical in _MILLI_TIMES:
        return _milli_time
    if logical == "io.debezium.time.MicroTime":
        return _micro_time
    if logical == "io.debezium.time.NanoTime":
        return _nano_time
    if f.type == "bytes":
        try:
            unchanged: bytes | None = placeholder.encode()
        except UnicodeEncodeError:
            unchanged = None  # each value then fails as it would have

        def binary(value: Any) -> Any:
            raw = _b64decode(value)
            return UNCHANGED if raw == (placeholder.encode() if unchanged is None else unchanged) else raw

        return binary
    if f.type == "array":
        item = converter(f.items, placeholder)

        def array(value: Any) -> Any:
            if value and all(v == placeholder for v in value):
                return UNCHANGED
            # inside a JSON array, a json item's JSON null and a NULL item are both `null`
            return [None if v is JSON.NULL else v for v in (item(v) for v in value)]

        return array
    return None


def _decimal_from_text(value: Any) -> Decimal:
    return Decimal(str(value))


def _variable_scale_decimal(value: Any) -> Decimal:
    if isinstance(value, dict):
        return _decimal_from_bytes(value["value"], int(value["scale"]))
    return Decimal(str(value))


def _date(value: Any) -> dt.date:
    return EPOCH_DATE + dt.timedelta(days=int(value))


def _milli_timestamp(value: Any) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=int(value))


def _micro_timestamp(value: Any) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=int(value))


def _nano_timestamp(value: Any) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=int(value) // 1000)


def _zoned_timestamp(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def _zoned_time(value: Any) -> dt.time:
    return dt.time.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


def _micro_duration(value: Any) -> dt.timedelta:
    return dt.timedelta(microseconds=int(value))


def _json_document(value: Any) -> Any:
    document = jsontext.loads(value)
    return JSON.NULL if document is None else document  # the JSON null, not SQL NULL


def _milli_time(value: Any) -> dt.time:
    return (EPOCH + dt.timedelta(milliseconds=int(value))).time()


def _micro_time(value: Any) -> dt.time:
    return (EPOCH + dt.timedelta(microseconds=int(value))).time()


def _nano_time(value: Any) -> dt.time:
    return (EPOCH + dt.timedelta(microseconds=int(value) // 1000)).time()


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC where the database has it; exact decimal text on SQLite (no float rounding)."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A point in time stored in UTC; read back timezone-aware (naive storage on SQLite)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def sql_type(f: Field) -> TypeEngine[Any]:
    """The state-store column type for a field."""
    logical = f.logical
    if logical in ("org.apache.kafka.connect.data.Decimal", "io.debezium.data.VariableScaleDecimal"):
        return ExactDecimal()
    if logical in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"):
        return Date()
    if logical == "io.debezium.time.ZonedTimestamp":
        return UtcDateTime()
    if logical in (
        "io.debezium.time.Timestamp",
        "io.debezium.time.MicroTimestamp",
        "io.debezium.time.NanoTimestamp",
        "org.apache.kafka.connect.data.Timestamp",
    ):
        return DateTime()
    if logical in (
        "io.debezium.time.Time",
        "io.debezium.time.MicroTime",
        "io.debezium.time.NanoTime",
        "io.debezium.time.ZonedTime",
        "org.apache.kafka.connect.data.Time",
    ):
        return Time()
    if logical == "io.debezium.time.MicroDuration":
        return Interval()
    if logical == "io.debezium.data.Json":
        return JSON(none_as_null=True)  # None is SQL NULL; JSON.NULL writes the JSON `null`
    by_type: dict[str, TypeEngine[Any]] = {
        "int8": SmallInteger(),
        "int16": SmallInteger(),
        "int32": Integer(),
        "int64": BigInteger(),
        "float": Float(),  # the JSON converter's names for FLOAT32 / FLOAT64
        "double": Float(),
        "float32": Float(),
        "float64": Float(),
        "boolean": Boolean(),
        "bytes": LargeBinary(),
        "array": JSON(none_as_null=True),
        "map": JSON(none_as_null=True),
        "struct": JSON(none_as_null=True),
    }
    return by_type.get(f.type, Text())


DAYS_PER_MONTH = 365.25 / 12  # Debezium's MicroDuration.DAYS_PER_MONTH_AVG: 30.4375
_LONG = 2**63
_ISO_INTERVAL = re.compile(
    r"P(?:(?P<years>[-+]?\d+)Y)?(?:(?P<months>[-+]?\d+)M)?(?:(?P<weeks>[-+]?\d+)W)?(?:(?P<days>[-+]?\d+)D)?"
    r"(?:T(?:(?P<hours>[-+]?\d+)H)?(?:(?P<minutes>[-+]?\d+)M)?(?:(?P<seconds>[-+]?\d+(?:\.\d*)?)S)?)?"
)


class IntervalParts(NamedTuple):
    """A Postgres interval as Postgres keeps it: months, days and microseconds, each signed."""

    months: int
    days: int
    micros: int


def parse_iso_interval(text: str) -> IntervalParts:
    """Parse an ISO-8601 duration: Postgres's output under `IntervalStyle = iso_8601`
    (`P1Y2M3DT4H5M6.78S`, `P-1DT2H`, `PT0S`) or Debezium's `interval.handling.mode=string`
    (`P1Y2M3DT4H5M6.78S`, `P0Y0M-1DT2H3M0.000001S`). Each field carries its own sign."""
    m = _ISO_INTERVAL.fullmatch(text.strip())
    if m is None or text.strip() in ("P", "PT"):
        raise ValueError(f"not an ISO-8601 interval: {text!r}")
    g = {k: v or "0" for k, v in m.groupdict().items()}
    seconds = (Decimal(g["seconds"]) * 1_000_000).to_integral_value(ROUND_HALF_EVEN)
    micros = (int(g["hours"]) * 3600 + int(g["minutes"]) * 60) * 1_000_000 + int(seconds)
    months = int(g["years"]) * 12 + int(g["months"])
    return IntervalParts(months, int(g["weeks"]) * 7 + int(g["days"]), micros)


def _split(value: int, unit: int) -> tuple[int, int]:
    """(quotient, remainder) truncated toward zero: the remainder keeps the value's sign."""
    q = abs(value) // unit * (1 if value >= 0 else -1)
    return q, value - q * unit


def debezium_micros(parts: IntervalParts) -> int:
    """Debezium's `interval.handling.mode=numeric` value (MicroDuration) for an interval: its
    microseconds with each month counted as 30.4375 days. Debezium computes it in floating point
    from the fields its JDBC driver parses (hours, minutes, then seconds with a fraction) and
    truncates toward zero; the same operations in the same order give the same result here."""
    hours, rest = _split(parts.micros, 3_600_000_000)
    minutes, rest = _split(rest, 60_000_000)
    whole, fraction = _split(rest, 1_000_000)
    seconds = whole + fraction / 1_000_000
    days = parts.months * DAYS_PER_MONTH + parts.days
    total = (((days * 24 + hours) * 60) + minutes) * 60 + seconds
    return max(-_LONG, min(_LONG - 1, int(total * 1e6)))  # Java's (long) cast saturates


def interval_micros(value: dt.timedelta) -> int:
    """The exact microseconds of a timedelta (no float)."""
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def canonical(value: Any) -> Any:
    """A comparable form of a value read from either database (used by `ecst.verify`)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, dt.time) and value.tzinfo is not None:
        moment = dt.datetime.combine(dt.date(2000, 1, 1), value).astimezone(dt.UTC)
        return moment.time()
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    if type(value).__name__ == "UUID":
        return str(value)
    return value

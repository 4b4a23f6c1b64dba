"""Comparison of the producer's table with the private state: row by row (every column), and
`verify_table` for operators: counts, a checksum per key range, then the keys that differ.

`verify_table` compares each column in the form the consumer stores it, decided per column by
`column_kind` from the source column's Postgres type and the Connect schema the state recorded for
it (`ecst_columns`, written from the very events the state was built from):

- interval: the recorded logical type tells which `interval.handling.mode` produced the state.
  `io.debezium.time.MicroDuration` (numeric, the default, or an int64 column without a schema):
  the source interval becomes Debezium's microseconds (`debezium_micros`: months of 30.4375 days,
  Debezium's float arithmetic). `io.debezium.time.Interval` (string, or a string column): both sides
  become (months, days, microseconds) parsed from ISO-8601. The source is read as text under
  `SET LOCAL IntervalStyle = iso_8601`, never through psycopg's timedelta (months as 30 days).
- json, jsonb: by value (key order and whitespace do not matter): both sides are read as JSON
  text (the state's column cast to text), parsed and dumped with sorted keys. SQL NULL stays
  None, the JSON document `null` becomes the text `null`: the two differ.
- arrays (stored as JSON): the same, from psycopg's list and from the state's JSON text.
- inet, cidr, macaddr, ranges, uuid, enums, xml, char(n)... (a string in the event): text, as
  Postgres's output function writes it and Debezium sends it (psycopg's ipaddress objects print
  some addresses differently, e.g. `::ffff:1.2.3.4`).
- money: read as numeric; numerics compare as exact decimals (trailing zeros do not matter), or as
  floats when the state holds floats (`decimal.handling.mode=double`).
- geometric types, bit strings, maps and arrays of non-JSON items (dates, numerics...) are not
  compared: `Drift.not_compared` names them and the summary says so, rather than a false drift.
"""

from __future__ import annotations

import bisect
import datetime as dt
import decimal
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types import TypeInfo
from psycopg.types.string import TextLoader

from ecst.consumer.types import (
    Field,
    canonical,
    debezium_micros,
    interval_micros,
    parse_iso_interval,
)

if TYPE_CHECKING:
    from ecst.consumer.store import StateStore


@dataclass
class Comparison:
    """The outcome of comparing two sets of rows by primary key."""

    source_rows: int
    state_rows: int
    missing: list[tuple] = field(default_factory=list)  # keys in the source, not in the state
    extra: list[tuple] = field(default_factory=list)  # keys in the state, not in the source
    differing: list[tuple[tuple, str, Any, Any]] = field(default_factory=list)  # key, col, src, state

    @property
    def matches(self) -> bool:
        return not (self.missing or self.extra or self.differing)

    def summary(self, limit: int = 5) -> str:
        if self.matches:
            return f"private state matches producer: {self.source_rows} rows"
        parts = [f"private state DIFFERS from producer ({self.source_rows} source rows, "
                 f"{self.state_rows} state rows)"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing, e.g. {self.missing[:limit]}")
        if self.extra:
            parts.append(f"{len(self.extra)} extra, e.g. {self.extra[:limit]}")
        if self.differing:
            parts.append(f"{len(self.differing)} differing values, e.g. {self.differing[:limit]}")
        return "; ".join(parts)


def compare_rows(source: Iterable[dict[str, Any]], state: Iterable[dict[str, Any]],
                 key: list[str]) -> Comparison:
    """Compare every source column of every row; the state may have extra columns."""
    src = {tuple(canonical(r[k]) for k in key): r for r in source}
    dst = {tuple(canonical(r[k]) for k in key): r for r in state}
    result = Comparison(source_rows=len(src), state_rows=len(dst))
    result.missing = sorted(k for k in src if k not in dst)
    result.extra = sorted(k for k in dst if k not in src)
    for k in sorted(src.keys() & dst.keys()):
        s, d = src[k], dst[k]
        for col, value in s.items():
            if col not in d:
                result.differing.append((k, col, value, "<no column>"))
            elif canonical(value) != canonical(d[col]):
                result.differing.append((k, col, value, d[col]))
    return result


def primary_key(conn: psycopg.Connection, table: str, schema: str = "public") -> list[str]:
    rows = conn.execute(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass
             AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)""",
        (schema, table),
    ).fetchall()
    return [r[0] for r in rows]


def source_rows(conn: psycopg.Connection, table: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        return cur.fetchall()


# How a column is compared (see the module docstring).
VALUE, TEXT, JSON_DOC, ARRAY, DECIMAL, FLOAT = "value", "text", "json", "array", "decimal", "float"
INTERVAL_MICROS, INTERVAL_ISO, UNSUPPORTED = "interval-micros", "interval-iso", "unsupported"

_DECIMALS = ("org.apache.kafka.connect.data.Decimal", "io.debezium.data.VariableScaleDecimal")
_FLOATS = ("float", "double", "float32", "float64")
_TEXT_LOGICALS = (None, "io.debezium.data.Enum", "io.debezium.data.Uuid", "io.debezium.data.Xml",
                  "io.debezium.data.Tsvector", "io.debezium.data.Ltree")
_JSON_ITEM_TYPES = ("string", "boolean", "int8", "int16", "int32", "int64", *_FLOATS)
_JSON_ITEM_LOGICALS = (*_TEXT_LOGICALS, "io.debezium.data.Json")
_TEXT_TYPES = ("inet", "cidr", "macaddr", "macaddr8")  # by the source type alone (no recorded schema)
_MISSING = "<no column>"


@dataclass(frozen=True)
class SourceColumn:
    """A column of the producer's table: its declared type, and its base type (through domains)."""

    name: str
    type: str  # as declared, e.g. `integer[]`, `numeric(12,3)`
    base: str  # pg_type.typname of the base type, e.g. `_int4`, `interval`, `inet`
    oid: int  # of the base type
    element: str | None = None  # for arrays, the element's type (regtype text, e.g. `inet`)
    element_oid: int | None = None


def source_columns(conn: psycopg.Connection, table: str, schema: str = "public") -> list[SourceColumn]:
    rows = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), bt.typname, bt.oid,
                  et.oid::regtype::text, et.oid
           FROM pg_attribute a
           JOIN pg_type t ON t.oid = a.atttypid
           JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
           LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
           WHERE a.attrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass
             AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        (schema, table),
    ).fetchall()
    return [SourceColumn(*r) for r in rows]


def _plain_items(items: Field | None) -> bool:
    """Array items the consumer stores as JSON as they came (no date, decimal... objects)."""
    return items is None or (items.type in _JSON_ITEM_TYPES and items.logical in _JSON_ITEM_LOGICALS)


def column_kind(src: SourceColumn, f: Field | None) -> str:
    """How verify compares a source column with the state column recorded as `f` (None: no
    Connect schema was recorded, e.g. a state written without one)."""
    logical = f.logical if f is not None else None
    if src.base == "interval":
        if f is not None and (logical == "io.debezium.time.Interval" or f.type == "string"):
            return INTERVAL_ISO
        return INTERVAL_MICROS
    if src.base in ("json", "jsonb"):
        return JSON_DOC
    if f is None:
        if src.element is not None:
            return ARRAY
        if src.base == "money":
            return DECIMAL
        return TEXT if src.base in _TEXT_TYPES else VALUE
    if logical == "io.debezium.data.Json":
        return UNSUPPORTED  # e.g. hstore sent as JSON: the source's text is not JSON
    if f.type == "array":
        return ARRAY if src.element is not None and _plain_items(f.items) else UNSUPPORTED
    if logical in _DECIMALS:
        return DECIMAL
    if f.type in _FLOATS:
        return FLOAT
    if f.type == "string" and logical in _TEXT_LOGICALS:
        return TEXT
    if f.type in ("struct", "map") or logical == "io.debezium.data.Bits" or (
            logical or "").startswith("io.debezium.data.geometry."):
        return UNSUPPORTED
    return VALUE


def json_text(document: Any) -> str:
    """One text per JSON value: sorted keys, no spaces (so key order and whitespace never count)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _decimal(value: Any) -> Any:
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if not d.is_finite():
        return str(d)
    return d.normalize(decimal.Context(prec=max(1, len(d.as_tuple().digits))))  # exact: drops zeros


def comparable(kind: str, value: Any, *, source: bool) -> Any:
    """The comparable form of one value of a column of `kind`, read from the producer (`source`,
    as `verify_table` reads it) or from the state (as `read_state` reads it). Pure."""
    if value is None:
        return None
    try:
        if kind == TEXT:
            return value if isinstance(value, str) else str(value)
        if kind in (JSON_DOC, ARRAY):
            return json_text(json.loads(value) if isinstance(value, str) else value)
        if kind == DECIMAL:
            return _decimal(value)
        if kind == FLOAT:
            return float(value)
        if kind == INTERVAL_MICROS:
            if source:
                return debezium_micros(parse_iso_interval(value))
            return interval_micros(value) if isinstance(value, dt.timedelta) else int(value)
        if kind == INTERVAL_ISO:
            return parse_iso_interval(value)
    except (ValueError, TypeError, ArithmeticError):
        return f"<not {kind}: {value!r}>"  # differs from every well-formed value: reported
    return canonical(value)


@dataclass
class StateRows:
    """A state table as verify compares it: JSON columns as their JSON text, and the Connect
    schema recorded for each column (empty when none was recorded)."""

    rows: list[dict[str, Any]]
    fields: dict[str, Field] = field(default_factory=dict)


def read_state(store: StateStore, table: str) -> StateRows:
    """Every row of a state table, with json/jsonb/array columns read as text so that SQL NULL
    (None) and the JSON `null` (the text `null`) stay apart, and the recorded column schemas."""
    from sqlalchemy import JSON, Text, cast, select

    from ecst.consumer.schema import POSITION

    if not store.has_table(table):
        return StateRows([])
    t = store.load_table(table)
    cols = [cast(c, Text).label(c.name) if isinstance(c.type, JSON) else c
            for c in t.columns if c.name != POSITION]
    spec = store.columns
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(*cols))]
        recorded = conn.execute(select(spec.c.column_name, spec.c.spec).where(spec.c.table_name == table))
        fields = {c: Field.from_schema(json.loads(s)) for c, s in recorded}
    return StateRows(rows, fields)


@dataclass
class Drift:
    """What `verify_table` found: per key range checksums, then the keys that differ."""

    source_table: str
    state_table: str
    ranges: int
    differing_ranges: int
    comparison: Comparison
    not_compared: dict[str, str] = field(default_factory=dict)  # state column -> source type

    @property
    def drifted(self) -> bool:
        return not self.comparison.matches

    def summary(self) -> str:
        c = self.comparison
        head = (f"{self.state_table}: {c.source_rows:,} source rows ({self.source_table}), {c.state_rows:,} "
                f"state rows, {self.ranges} key ranges, {self.differing_ranges} differ")
        if self.not_compared:
            head += "; not compared (verify cannot compare these types): " + ", ".join(
                f"{col} ({kind})" for col, kind in sorted(self.not_compared.items()))
        if not self.drifted:
            return head + ": no drift"
        return head + f": DRIFT, {len(c.missing)} missing, {len(c.extra)} extra, " \
            f"{len(c.differing)} differing values; e.g. missing {c.missing[:5]}, extra {c.extra[:5]}, " \
            f"differing {[(k, col) for k, col, _, _ in c.differing[:5]]}"


def _checksum(rows: list[tuple]) -> str:
    h = hashlib.sha256()
    for r in sorted(rows, key=repr):
        h.update(repr(r).encode())
    return h.hexdigest()


def _read_source(conn: psycopg.Connection, schema: str, table: str, columns: list[SourceColumn],
                 kinds: dict[str, str]) -> list[dict[str, Any]]:
    """The producer's rows, each column read in the form its kind compares (inside the caller's
    read-only transaction, which set IntervalStyle)."""
    exprs: list[sql.Composable] = []
    for c in columns:
        ident = sql.Identifier(c.name)
        kind = kinds.get(c.name, VALUE)
        if kind in (JSON_DOC, INTERVAL_MICROS, INTERVAL_ISO):
            exprs.append(sql.SQL("{}::text AS {}").format(ident, ident))
        elif c.base == "money":
            exprs.append(sql.SQL("{}::numeric AS {}").format(ident, ident))  # text would be locale's
        else:
            exprs.append(ident)
    with conn.cursor(row_factory=dict_row) as cur:
        for c in columns:  # Postgres's own output text, as Debezium sends it
            if kinds.get(c.name) == TEXT:
                cur.adapters.register_loader(c.oid, TextLoader)
            elif kinds.get(c.name) == ARRAY and c.element is not None:
                if c.element in _TEXT_TYPES and c.element_oid is not None:  # set with `element`
                    cur.adapters.register_loader(c.element_oid, TextLoader)
                if cur.adapters.types.get(c.oid) is None:  # e.g. an enum's array: psycopg needs its OIDs
                    info = TypeInfo.fetch(conn, c.element)
                    if info is not None:
                        info.register(cur)
        cur.execute(sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(exprs), sql.Identifier(schema), sql.Identifier(table)))
        return cur.fetchall()


def verify_table(conn: psycopg.Connection, source_table: str, state: StateRows, state_table: str,
                 columns: dict[str, str] | None = None, key: list[str] | None = None,
                 range_size: int = 1000) -> Drift:
    """Compare a producer table (read in a read-only transaction) with a state table read by
    `read_state`: the same columns (`columns` maps source to state names; None: every source
    column) by key, each in the form the consumer stores it (module docstring)."""
    schema, _, table = source_table.rpartition(".")
    schema = schema or "public"
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("SET LOCAL IntervalStyle = 'iso_8601'")
        src_columns = source_columns(conn, table, schema)
        src_key = key or primary_key(conn, table, schema)
        mapping = columns or {c.name: c.name for c in src_columns}
        kinds = {c.name: column_kind(c, state.fields.get(mapping[c.name]))
                 for c in src_columns if c.name in mapping}
        source = _read_source(conn, schema, table, src_columns, kinds)
    not_compared = {mapping[c.name]: c.type for c in src_columns if kinds.get(c.name) == UNSUPPORTED}
    state_kinds = {mapping[c]: k for c, k in kinds.items() if k != UNSUPPORTED}
    projected = [{mapping[c]: comparable(kinds[c], v, source=True) for c, v in r.items()
                  if c in mapping and kinds[c] != UNSUPPORTED} for r in source]
    state_rows = [{c: comparable(k, r[c], source=False) for c, k in state_kinds.items() if c in r}
                  for r in state.rows]
    state_key = [mapping.get(k, k) for k in src_key]
    names = sorted(state_kinds)

    def k(r: dict[str, Any]) -> tuple:
        return tuple(canonical(r.get(c)) for c in state_key)

    def values(r: dict[str, Any]) -> tuple:
        return tuple(canonical(r.get(c, _MISSING)) for c in names)

    keys = sorted(k(r) for r in projected)
    bounds = keys[::range_size] or [()]

    def bucket(key_: tuple) -> int:
        return max(0, bisect.bisect_right(bounds, key_) - 1)

    src_ranges: dict[int, list] = {}
    dst_ranges: dict[int, list] = {}
    for r in projected:
        src_ranges.setdefault(bucket(k(r)), []).append(r)
    for r in state_rows:
        dst_ranges.setdefault(bucket(k(r)), []).append(r)
    differing = [i for i in sorted(src_ranges.keys() | dst_ranges.keys())
                 if _checksum([values(r) for r in src_ranges.get(i, [])])
                 != _checksum([values(r) for r in dst_ranges.get(i, [])])]
    comparison = compare_rows([r for i in differing for r in src_ranges.get(i, [])],
                              [r for i in differing for r in dst_ranges.get(i, [])], state_key)
    comparison.source_rows, comparison.state_rows = len(projected), len(state_rows)
    return Drift(source_table, state_table, len(bounds), len(differing), comparison, not_compared)

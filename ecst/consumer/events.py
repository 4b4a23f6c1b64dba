"""Debezium change records (JSON converter) decoded into `ChangeEvent` values: pure functions.

`decode(record)` accepts, with `schemas.enable` true or false:
- the Debezium envelope (`before`, `after`, `source`, `op`);
- the flattened form of the `ExtractNewRecordState` SMT, which needs `add.fields` to include
  `lsn` and `sequence` (the position) and `op`, and deletes as rows with `__deleted: "true"`
  (`delete.tombstone.handling.mode` `rewrite` or `rewrite-with-tombstone`).
It returns None for records that carry no row change (Kafka tombstones, heartbeats,
transaction metadata), and raises `EventError` for records it cannot read.

With `defer` (a PostgreSQL state: `pg_decode.row_check`), an envelope's `after` row whose every
value the database can decode itself is left as its JSON values, the event marked `deferred`; its
`before` is not decoded (only a mapping reads it, and mapped topics are never deferred).
`materialized(event)` decodes such a row in Python, for any writer that does not take it as it is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ecst.consumer import jsontext
from ecst.consumer.positions import source_order
from ecst.consumer.types import DEFAULT_PLACEHOLDER, UNCHANGED, Converter, Field, converter, passes_through
from ecst.exceptions import DeferredDecodeError, EventError

OPS = frozenset("crudt")
RowCheck = Callable[[dict[str, Any]], bool]
Deferral = Callable[[Sequence[Field], str], RowCheck | None]
"""Given a struct's fields and the placeholder, how to tell the rows left to the database (see
`pg_decode.row_check`), or None: none of them."""


@dataclass(frozen=True)
class Record:
    """One Kafka record as the consumer received it (raw bytes, no I/O attached)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None  # ms: the record's Kafka timestamp (when the worker sent it), if known


@dataclass(frozen=True)
class ChangeEvent:
    """One row change: what happened to which key of which source table, and at what position.

    `position` orders changes of one key by commit (`ecst.consumer.positions`); the state store
    never lets an event overwrite a row holding a newer position. It is None only for a delete
    known from a Kafka tombstone alone (see `tombstone_delete`), ordered by offset. `opening`
    marks a change of the transaction that opens a stream (no previous commit known) and `anchor`
    a snapshot row read at a stream position: `positions.commit_order` uses both.
    `deferred`: the row's decoding was left to the database (`decode`'s `defer`): `after` holds
    the JSON values as they came, and `materialized` decodes them.
    """

    op: str
    table: str
    key: dict[str, Any]
    after: dict[str, Any] | None
    position: int | None
    topic: str
    partition: int
    offset: int
    snapshot: str | None = None
    ts_ms: int | None = None
    before: dict[str, Any] | None = None
    fields: tuple[Field, ...] = field(default=(), compare=False)
    key_fields: tuple[Field, ...] = field(default=(), compare=False)
    opening: bool = False
    anchor: bool = False
    deferred: _Struct | None = field(default=None, compare=False, repr=False)


def materialized(event: ChangeEvent) -> ChangeEvent:
    """`event` with its row decoded in Python if its decoding was deferred (else `event` itself);
    a value Python cannot decode raises DeferredDecodeError naming the record."""
    struct = event.deferred
    if struct is None:
        return event
    try:
        after = struct.row(event.after)
    except EventError as exc:
        raise DeferredDecodeError(f"{event.topic}[{event.partition}]@{event.offset}", str(exc)) from exc
    return dataclasses.replace(event, after=after, deferred=None)


def _loads(raw: bytes, what: str) -> Any:
    try:
        return jsontext.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"{what} is not JSON: {exc}") from exc


class _Struct:
    """The fields of one struct schema and the converters of its columns, chosen once: a column
    whose values pass through as they are (text, numbers, booleans) needs none."""

    __slots__ = ("fields", "_placeholder", "_converters", "_checks")

    def __init__(self, fields: tuple[Field, ...], placeholder: str) -> None:
        self.fields = fields
        self._placeholder = placeholder
        self._checks: dict[Deferral, RowCheck | None] = {}
        by_name = {f.name: f for f in fields}  # a name twice: the last field of that name
        self._converters: dict[str, Converter] = {
            name: converter(f, placeholder) for name, f in by_name.items() if not passes_through(f)}

    def row(self, payload: dict[str, Any] | None) -> dict[str, Any] | None:
        """The row of a struct payload, each value decoded as `convert` decodes it."""
        if payload is None:
            return None
        out: dict[str, Any] = {}
        converters, placeholder = self._converters, self._placeholder
        name = None
        try:
            for name, value in payload.items():
                convert = converters.get(name)
                if convert is not None:
                    out[name] = convert(value)
                elif value == placeholder and isinstance(value, str):
                    out[name] = UNCHANGED
                else:
                    out[name] = value
        except EventError as exc:
            raise EventError(f"column {name!r}: {exc}") from exc
        return out

    def check(self, defer: Deferral) -> RowCheck | None:
        """`defer(self.fields, placeholder)`, computed once."""
        try:
            return self._checks[defer]
        except KeyError:
            found = self._checks[defer] = defer(self.fields, self._placeholder)
            return found


class _Schema(dict[str, Any]):
    """A parsed Connect schema, shared by every record that embeds the same schema bytes;
    the field lists and converters derived from it are computed once."""

    def fields_of(self, name: str | None) -> tuple[Field, ...]:
        cache: dict[str | None, tuple[Field, ...]] = self.__dict__.setdefault("_fields", {})
        if name not in cache:
            if name is None:
                cache[name] = _struct_fields(self)
            else:
                cache[name] = _struct_fields(_envelope_field(self, name))
        return cache[name]

    def struct_of(self, name: str | None, placeholder: str, flattened: bool = False) -> _Struct:
        """`_struct(self, name, placeholder, flattened)`, computed once."""
        cache: dict[tuple[str | None, str, bool], _Struct] = self.__dict__.setdefault("_structs", {})
        key = (name, placeholder, flattened)
        found = cache.get(key)
        if found is None:
            found = cache[key] = _new_struct(self.fields_of(name), placeholder, flattened)
        return found


SMT_PREFIX = "__"
_DOCUMENT_KEYS = frozenset({"schema", "payload"})
_SCHEMAS: dict[bytes, _Schema] = {}
_SCHEMA_CACHE_SIZE = 512
_HEAD, _PAYLOAD = b'{"schema":', b',"payload":'


def _document(raw: bytes, what: str) -> tuple[dict[str, Any] | None, Any]:
    """(schema, payload) of a JSON-converter document. The converter writes compact JSON with the
    schema first, the same bytes for every record of a table version: those are parsed once."""
    if raw.startswith(_HEAD) and raw.endswith(b"}"):
        cut = raw.find(_PAYLOAD)  # the first one: the schema holds no user data, the payload may
        if cut > 0:
            schema_raw = raw[len(_HEAD):cut]
            schema = _SCHEMAS.get(schema_raw)
            try:
                if schema is None:
                    schema = _Schema(jsontext.loads(schema_raw))
                    if len(_SCHEMAS) >= _SCHEMA_CACHE_SIZE:
                        _SCHEMAS.clear()
                    _SCHEMAS[schema_raw] = schema
                return schema, jsontext.loads(raw[cut + len(_PAYLOAD):-1])
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError):
                pass  # not the converter's layout after all: parse the whole document
    return _split(_loads(raw, what))


def _fields(schema: dict[str, Any] | None, name: str | None) -> tuple[Field, ...]:
    if isinstance(schema, _Schema):
        return schema.fields_of(name)
    return _struct_fields(schema if name is None else _envelope_field(schema, name))


def _struct(schema: dict[str, Any] | None, name: str | None, placeholder: str,
            flattened: bool = False) -> _Struct:
    """The fields of struct `name` of `schema` (the schema itself for None; without the SMT's
    `__` fields when `flattened`) with their converters; cached with a schema seen before."""
    if isinstance(schema, _Schema):
        return schema.struct_of(name, placeholder, flattened)
    if not schema:  # no schema (schemas.enable=false): no field, the same struct every time
        found = _NO_FIELDS.get(placeholder)
        if found is None:
            found = _NO_FIELDS[placeholder] = _Struct((), placeholder)
        return found
    return _new_struct(_fields(schema, name), placeholder, flattened)


_NO_FIELDS: dict[str, _Struct] = {}  # by placeholder


def _new_struct(fields: tuple[Field, ...], placeholder: str, flattened: bool) -> _Struct:
    if flattened:
        fields = tuple(f for f in fields if not f.name.startswith(SMT_PREFIX))
    return _Struct(fields, placeholder)


def _split(doc: Any) -> tuple[dict[str, Any] | None, Any]:
    """(schema, payload) from a JSON-converter document, with or without an embedded schema."""
    if isinstance(doc, dict) and doc.keys() == _DOCUMENT_KEYS:
        return doc["schema"], doc["payload"]
    return None, doc


def _struct_fields(schema: dict[str, Any] | None) -> tuple[Field, ...]:
    if not schema:
        return ()
    return tuple(Field.from_schema(f) for f in schema.get("fields", ()))


def _envelope_field(schema: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if not schema:
        return None
    fields: list[dict[str, Any]] = schema.get("fields", [])
    for f in fields:
        if f.get("field") == name:
            return f
    return None


HEARTBEAT_SCHEMA = "io.debezium.connector.common.Heartbeat"
_TS_ONLY = frozenset({"ts_ms"})


def _no_change(schema: dict[str, Any] | None, payload: Any) -> bool:
    """Heartbeat and transaction-metadata records: valid Debezium output with no row change."""
    name = (schema or {}).get("name") or ""
    if name == HEARTBEAT_SCHEMA or name.endswith("TransactionMetadataValue"):
        return True
    if isinstance(payload, dict):
        if payload.keys() <= _TS_ONLY:  # heartbeat without schema
            return True
        if payload.get("status") in ("BEGIN", "END") and "id" in payload and "op" not in payload:
            return True
    return False


def _key_of(record: Record, placeholder: str) -> tuple[dict[str, Any] | None, tuple[Field, ...]]:
    if record.key is None:
        return None, ()
    key_schema, key_payload = _document(record.key, "record key")
    struct = _struct(key_schema, None, placeholder)
    if isinstance(key_payload, dict):
        return struct.row(key_payload) or {}, struct.fields
    if key_payload is None:
        return None, struct.fields
    raise EventError(f"record key {key_payload!r} is not a struct")


def is_tombstone(record: Record) -> bool:
    """A null value, or a JSON-converter document whose payload is null (what a transform that
    turns a delete into a tombstone emits when schemas are enabled)."""
    if record.value is None:
        return True
    try:
        return _split(jsontext.loads(record.value))[1] is None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def decode(record: Record, placeholder: str = DEFAULT_PLACEHOLDER,
           defer: Deferral | None = None) -> ChangeEvent | None:
    """Decode one Debezium change record; None for a record with no row change. With `defer`,
    a row the database can decode is left to it (module docstring)."""
    if record.value is None:
        return None
    value_schema, payload = _document(record.value, "record value")
    if payload is None or _no_change(value_schema, payload):
        return None
    if not isinstance(payload, dict):
        raise EventError("record value is not a Debezium change event (not a JSON object)")
    if "op" not in payload and any(k.startswith(SMT_PREFIX) for k in payload):
        return _decode_flattened(record, value_schema, payload, placeholder)
    if "op" not in payload:
        raise EventError("record value is not a Debezium change envelope (no 'op' field)")
    op = payload["op"]
    if op not in OPS:
        raise EventError(f"unknown op {op!r}; expected one of c, r, u, d, t")
    source = payload.get("source") or {}
    table = source.get("table")
    if not table:
        raise EventError("change envelope has no source.table")

    key, key_fields = _key_of(record, placeholder)
    struct = _struct(value_schema, "after", placeholder)
    if not struct.fields:
        struct = _struct(value_schema, "before", placeholder)
    fields = struct.fields
    deferred: _Struct | None = None
    if op in "cru":
        after = payload.get("after")
        if defer is not None and after.__class__ is dict:
            check = struct.check(defer)
            if check is not None and check(after):
                deferred = struct
        if deferred is None:
            after = struct.row(after)
    else:
        after = None
    before = None if deferred is not None else struct.row(payload.get("before"))
    if op != "t":
        if not key:
            raise EventError(
                f"change to {table!r} has no key: the table needs a primary key "
                "(or message.key.columns on the connector)"
            )
        if op in "cru" and after is None:
            raise EventError(f"op {op!r} without 'after' row")

    snapshot = source.get("snapshot")
    position, opening, anchor = source_order(op, source)
    return ChangeEvent(
        op=op,
        table=table,
        key=key or {},
        after=after,
        position=position,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        snapshot=None if snapshot in (None, "false", False) else str(snapshot),
        ts_ms=source.get("ts_ms"),
        before=before,
        fields=fields,
        key_fields=key_fields,
        opening=opening,
        anchor=anchor,
        deferred=deferred,
    )


def tombstone_delete(record: Record, table: str | None = None) -> ChangeEvent | None:
    """A Kafka tombstone read as a delete of its key, for flattened topics whose deletes arrive
    only as tombstones (`delete.tombstone.handling.mode` `tombstone` or `delete-to-tombstone`).
    It carries no source position: within its partition it follows every earlier change of
    its key, so it is applied in offset order."""
    key, key_fields = _key_of(record, DEFAULT_PLACEHOLDER)
    if not key:
        return None
    return ChangeEvent(op="d", table=table or record.topic.rsplit(".", 1)[-1], key=key, after=None,
                       position=None, topic=record.topic, partition=record.partition,
                       offset=record.offset, key_fields=key_fields)


def _decode_flattened(
    record: Record, schema: dict[str, Any] | None, payload: dict[str, Any], placeholder: str
) -> ChangeEvent:
    """The ExtractNewRecordState form: the row itself plus `__`-prefixed metadata fields."""
    meta = {k[len(SMT_PREFIX):]: v for k, v in payload.items() if k.startswith(SMT_PREFIX)}
    if not meta.get("sequence"):
        raise EventError(
            "flattened event (ExtractNewRecordState) without __sequence: add 'lsn' and 'sequence' to "
            "the SMT's add.fields (e.g. add.fields=op,lsn,sequence,table,source.ts_ms,source.snapshot) "
            "so changes can be ordered by commit (docs/positions.md)"
        )
    deleted = str(meta.get("deleted", "false")).lower() == "true"
    op = "d" if deleted else meta.get("op") or "u"
    if op not in OPS:
        raise EventError(f"unknown __op {op!r}; expected one of c, r, u, d")
    struct = _struct(schema, None, placeholder, flattened=True)
    fields = struct.fields
    row = struct.row({k: v for k, v in payload.items() if not k.startswith(SMT_PREFIX)})
    key, key_fields = _key_of(record, placeholder)
    table = meta.get("table") or record.topic.rsplit(".", 1)[-1]
    if not key:
        raise EventError(f"change to {table!r} has no key: the table needs a primary key")
    snapshot = meta.get("source_snapshot")
    source = {"lsn": meta.get("lsn"), "sequence": meta.get("sequence"), "snapshot": snapshot}
    position, opening, anchor = source_order(op, source)
    return ChangeEvent(
        op=op,
        table=table,
        key=key,
        after=None if deleted else row,
        position=position,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        snapshot=None if snapshot in (None, "false", False) else str(snapshot),
        ts_ms=meta.get("source_ts_ms"),
        before=row if deleted else None,
        fields=fields,
        key_fields=key_fields,
        opening=opening,
        anchor=anchor,
    )

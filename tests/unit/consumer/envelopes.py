"""Hand-written Debezium envelopes, shaped like what Debezium 3.6 emits for public.users."""

from __future__ import annotations

import base64
import json
from decimal import Context, Decimal

KEY_SCHEMA = {
    "type": "struct",
    "fields": [{"type": "int64", "optional": False, "default": 0, "field": "id"}],
    "optional": False,
    "name": "producer.public.users.Key",
}

ROW_FIELDS = [
    {"type": "int64", "optional": False, "default": 0, "field": "id"},
    {"type": "string", "optional": False, "field": "email"},
    {"type": "bytes", "optional": False, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
     "parameters": {"scale": "2", "connect.decimal.precision": "12"}, "field": "balance"},
    {"type": "boolean", "optional": False, "default": True, "field": "active"},
    {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "version": 1, "field": "birth_date"},
    {"type": "int64", "optional": True, "name": "io.debezium.time.MicroTimestamp", "version": 1,
     "field": "last_login"},
    {"type": "string", "optional": False, "name": "io.debezium.time.ZonedTimestamp", "version": 1,
     "field": "created_at"},
    {"type": "string", "optional": True, "field": "bio"},
]


def value_schema(fields=None):
    row = {"type": "struct", "fields": fields or ROW_FIELDS, "optional": True,
           "name": "producer.public.users.Value"}
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {"type": "struct", "fields": [], "optional": False, "field": "source"},
            {"type": "string", "optional": False, "field": "op"},
        ],
        "optional": False,
        "name": "producer.public.users.Envelope",
    }


def decimal_b64(value: str, scale: int = 2) -> str:
    unscaled = int(Decimal(value).scaleb(scale, Context(prec=100)))
    length = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()


def row(id_, *, email=None, balance="10.50", active=True, birth_date=19000,
        last_login=1704069247123456, created_at="2024-01-01T10:00:00.123456Z", bio="hello"):
    return {"id": id_, "email": email or f"user{id_}@example.com", "balance": decimal_b64(balance),
            "active": active, "birth_date": birth_date, "last_login": last_login,
            "created_at": created_at, "bio": bio}


def source(lsn, snapshot="false", table="users", sequence=None):
    return {"version": "3.6.1.Final", "connector": "postgresql", "name": "producer",
            "ts_ms": 1795967829657, "snapshot": snapshot, "db": "producer",
            "sequence": sequence if sequence is not None else json.dumps([None, str(lsn)]),
            "schema": "public", "table": table, "txId": 797, "lsn": lsn}


def envelope(op, id_, lsn, *, after=None, before=None, snapshot="false", schemas=True,
             table="users", sequence=None, fields=None):
    if sequence is None and op != "r":  # a streamed change after some commit (not an opening one)
        sequence = json.dumps([str(lsn), str(lsn)])
    payload = {"before": before, "after": after, "source": source(lsn, snapshot, table, sequence),
               "transaction": None, "op": op, "ts_ms": 1795967829728}
    key_payload = {"id": id_}
    if schemas:
        return (compact({"schema": KEY_SCHEMA, "payload": key_payload}),
                compact({"schema": value_schema(fields), "payload": payload}))
    return compact(key_payload), compact(payload)


def compact(doc) -> bytes:
    """JSON as Kafka's JsonConverter writes it: no spaces, schema before payload."""
    return json.dumps(doc, separators=(",", ":")).encode()


TOPIC = "producer.public.users"


def event(op, id_, lsn, offset=0, **kw):
    """The decoded change event of `envelope(op, id_, lsn, **kw)` at `offset` of TOPIC[0]."""
    from ecst.consumer.events import Record, decode

    key, value = envelope(op, id_, lsn, **kw)
    return decode(Record(TOPIC, 0, offset, key, value))

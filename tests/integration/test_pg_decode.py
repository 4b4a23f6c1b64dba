"""Rows decoded by PostgreSQL itself (`pg_decode`, the decoding merge of `writes_postgres`)
against rows decoded in Python, on a real PostgreSQL: the same records, decoded with and without
`defer`, through the same stores' batches, leave the same databases, every table and every
column of every row compared in PostgreSQL's own text form (`row_to_json`: a numeric's scale, a
timestamp's microseconds, a NULL), with the same counts.

The records carry every covered type at its edges (the first and last day Python can hold,
the int64 bounds, the largest 8-byte Decimal, text with quotes, backslashes, tabs, newlines and
non-ASCII), NULLs, and seeded random values; the batches mix deferred rows with rows Python
must decode (a TOAST placeholder, a Decimal over 8 bytes, a float infinity), stale replays,
deletes and the creates their tombstones stop, and a batch too small for the merge. A value the
server cannot read rejects the batch as a bad one, and that record alone then fails as decode
would have failed it.
"""

import datetime as dt
import random
import uuid
from unittest import mock

import pytest
from sqlalchemy.exc import SQLAlchemyError

from ecst.consumer import store as store_module
from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.events import Record, decode
from ecst.consumer.outage import store_error
from ecst.consumer.pg_decode import row_check
from ecst.consumer.runner import Consumer, RebuildPolicy
from ecst.consumer.store import StateStore
from ecst.consumer.writes_postgres import PostgresBatchWriter
from ecst.exceptions import DeferredDecodeError, EventError
from tests.integration.test_writes_postgres import dump
from tests.unit.consumer.envelopes import decimal_b64, envelope

NOW = dt.datetime(2026, 12, 1, 1, 2, 3, 456789)
TOPIC = "p.public.covered"


def field(name, kind, logical=None, **parameters):
    out = {"type": kind, "optional": name != "id", "field": name}
    if logical:
        out["name"] = logical
    if parameters:
        out["parameters"] = {k: str(v) for k, v in parameters.items()}
    return out


DECIMAL = "org.apache.kafka.connect.data.Decimal"
FIELDS = [
    field("id", "int64"), field("i16", "int16"), field("i32", "int32"), field("i64", "int64"),
    field("f32", "float"), field("f64", "double"), field("flag", "boolean"), field("txt", "string"),
    field("uid", "string", "io.debezium.data.Uuid"), field("mood", "string", "io.debezium.data.Enum"),
    field("year", "int32", "io.debezium.time.Year"),
    field("d2", "bytes", DECIMAL, scale=2), field("d0", "bytes", DECIMAL, scale=0),
    field("d6", "bytes", DECIMAL, scale=6), field("day", "int32", "io.debezium.time.Date"),
    field("at_us", "int64", "io.debezium.time.MicroTimestamp"),
    field("at_ms", "int64", "io.debezium.time.Timestamp"),
    field("at_tz", "string", "io.debezium.time.ZonedTimestamp"),
]
PLACEHOLDER = "__debezium_unavailable_value"

class B64(str):
    """A Decimal's value as it is on the wire (base64), not a number to encode."""


EDGES = [
    {"i16": -32768, "i32": -2**31, "i64": -2**63, "f32": -1.5, "f64": 5e-324, "flag": False, "txt": "",
     "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "mood": "sad", "year": 1,
     "d2": B64("gAAAAAAAAAA="), "d0": B64("gAAAAAAAAAA="),  # -2**63 in 8 bytes, as Java writes it
     "d6": "-0.000001", "day": -719162, "at_us": -62135596800000000, "at_ms": -62135596800000,
     "at_tz": "0001-01-01T00:00:00Z"},
    {"i16": 32767, "i32": 2**31 - 1, "i64": 2**63 - 1, "f32": 3.4028234663852886e38,
     "f64": 1.7976931348623157e308, "flag": True, "txt": 'quote" back\\slash tab\t new\nline cr\r ☃ é 𝄞',
     "uid": None, "mood": "happy", "year": 9999, "d2": "92233720368547758.07", "d0": "9223372036854775807",
     "d6": "9223372036854.775807", "day": 2932896, "at_us": 253402300799999999, "at_ms": 253402300799999,
     "at_tz": "9999-12-31T23:59:59.999999Z"},
    {"i16": 0, "i32": 0, "i64": 0, "f32": 0.0, "f64": -0.0,  # -0.0: decoded in Python
     "flag": None, "txt": "\\N", "uid": "", "mood": "",
     "year": 0, "d2": "0.00", "d0": "0", "d6": "0", "day": 0, "at_us": 0, "at_ms": 0,
     "at_tz": "1970-01-01T00:00:00Z"},
    {"i16": -1, "i32": -1, "i64": -1, "f32": 0.1, "f64": 0.1, "flag": True, "txt": '{"json": [1, null]}',
     "uid": None, "mood": None, "year": None, "d2": "-0.01",
     "d0": "-9223372036854775808",  # 9 bytes here (Python's encoding): decoded in Python
     "d6": "-1.5", "day": -1, "at_us": -1, "at_ms": -1, "at_tz": "1969-12-31T23:59:59.5Z"},
    {"i16": 7, "i32": 19000, "i64": 1704069247123456, "f32": 1e-45, "f64": 1e300, "flag": False,
     "txt": "x" * 3000, "uid": None, "mood": "ok", "year": 2024, "d2": "10.50", "d0": "255",
     "d6": "128.000001",
     "day": 19000, "at_us": 1704069247123456, "at_ms": 1704069247123, "at_tz": "2024-02-29T12:34:56.789012Z"},
]

NULLS = dict.fromkeys(EDGES[0])


def values(rng):
    """Random values, in range for every type."""
    return {"i16": rng.randint(-32768, 32767), "i32": rng.randint(-2**31, 2**31 - 1),
            "i64": rng.randint(-2**63, 2**63 - 1), "f32": rng.uniform(-1e6, 1e6),
            "f64": rng.uniform(-1e300, 1e300), "flag": rng.choice([True, False, None]),
            "txt": "".join(rng.choice("ab \\\t\n\"'é☃") for _ in range(rng.randint(0, 30))),
            "uid": str(uuid.UUID(int=rng.getrandbits(128))), "mood": rng.choice(["sad", "ok", None]),
            "year": rng.randint(1, 9999), "d2": f"{rng.randint(-10**17, 10**17)}e-2",
            "d0": str(rng.randint(-2**63, 2**63 - 1)), "d6": f"{rng.randint(-10**15, 10**15)}e-6",
            "day": rng.randint(-719162, 2932896),
            "at_us": rng.randint(-62135596800000000, 253402300799999999),
            "at_ms": rng.randint(-62135596800000, 253402300799999),
            "at_tz": (dt.datetime(1, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
                microseconds=rng.randint(0, 315537897599999999))).isoformat().replace("+00:00", "Z")}


def after(key, v):
    out = {"id": key, **v}
    for name, scale in (("d2", 2), ("d0", 0), ("d6", 6)):
        if out[name] is not None and not isinstance(out[name], B64):
            out[name] = decimal_b64(out[name], scale)
    return out


def record(op, key, lsn, offset, v=None, table="covered"):
    k, value = envelope(op, key, lsn, after=None if op == "d" else after(key, v), fields=FIELDS,
                        table=table, snapshot="true" if op == "r" else "false")
    return Record(TOPIC, 0, offset, k, value)


@pytest.fixture(scope="module")
def databases(stack):
    made = {side: stack.new_database(f"decode_{side}_{uuid.uuid4().hex[:8]}")
            for side in ("python", "server")}
    yield {side: url for side, (url, _drop) in made.items()}
    for _url, drop in made.values():
        drop()


def differences(a, b):
    """Each table that differs between two dumps: its columns if they do, else the first rows
    found in one dump only."""
    out = {}
    for name in sorted(a.keys() | b.keys()):
        (cols_a, rows_a), (cols_b, rows_b) = a.get(name, ([], [])), b.get(name, ([], []))
        if cols_a != cols_b:
            out[name] = (cols_a, cols_b)
        elif rows_a != rows_b:
            out[name] = sorted(set(rows_a) ^ set(rows_b))[:4]
    return out


def apply(store, records, offsets, defer):
    events = [e for e in (decode(r, defer=row_check if defer else None) for r in records) if e is not None]
    stats = store.apply(events, offsets)
    return dict(stats.by_table_op), stats.stale, sum(e.deferred is not None for e in events)


def test_the_server_decodes_every_covered_type_as_python_does(databases):
    rng = random.Random(20261201)
    table = f"covered_{uuid.uuid4().hex[:6]}"
    stores = {side: StateStore(url) for side, url in databases.items()}
    merged = []
    real = PostgresBatchWriter._decode_in_database

    def spy(writer, merge, name, upserts):
        done = real(writer, merge, name, upserts)
        merged.append((len(upserts), done))
        return done

    offset = 0

    def batch(rows):
        nonlocal offset
        out = []
        for op, key, lsn, v in rows:
            out.append(record(op, key, lsn, offset, v, table))
            offset += 1
        return out

    load = batch([("r", n, 1000, EDGES[n] if n < len(EDGES) else NULLS if n == 5 else values(rng))
                  for n in range(200)])
    stream = batch(
        [("u", n, 2000 + n, values(rng)) for n in range(0, 120)]                       # newer
        + [("u", n, 500, values(rng)) for n in range(120, 150)]                         # stale: the guard
        + [("d", n, 3000, None) for n in range(150, 170)]                               # deletes
        + [("u", n, 2500, {**values(rng), "txt": PLACEHOLDER}) for n in range(170, 175)]  # TOAST: Python
        + [("u", n, 2500, {**values(rng), "d2": "123456789012345678901.23"}) for n in range(175, 178)]
        + [("u", n, 2500, {**values(rng), "f64": float("inf")}) for n in range(178, 180)]
        + [("c", n, 4000, values(rng)) for n in range(200, 290)])                        # new keys
    replay = batch([("r", n, 1000, values(rng)) for n in range(150, 170)]     # stopped by tombstones
                   + [("c", n, 3500, values(rng)) for n in range(160, 165)]    # newer than them: back
                   + [("r", n, 1000, values(rng)) for n in range(0, 100)])     # older than the state
    small = batch([("u", n, 5000, values(rng)) for n in range(10)])           # too few for the merge
    try:
        with (mock.patch.object(store_module, "_utcnow", lambda: NOW),
              mock.patch.object(PostgresBatchWriter, "_decode_in_database", spy)):
            for records in (load, stream, replay, small):
                offsets = {(TOPIC, 0): records[-1].offset + 1}
                python = apply(stores["python"], records, offsets, defer=False)
                server = apply(stores["server"], records, offsets, defer=True)
                assert server[:2] == python[:2] and python[2] == 0
                assert differences(dump(stores["server"]), dump(stores["python"])) == {}
                merged.append(("batch", server[2]))
        # the merge took every deferred row of the three large batches (all of the load's but the
        # 9-byte Decimal's and the -0.0's; the replay's 125 events collapse to 120 keys); the
        # small batch was decoded in Python
        assert merged == [(198, True), ("batch", 198), (120 + 30 + 90, True), ("batch", 120 + 30 + 90),
                          (120, True), ("batch", 125), ("batch", 10)], merged
        assert stores["server"].count(table) == 200 - 20 + 5 + 90
    finally:
        for s in stores.values():
            s.close()


def test_a_value_the_server_cannot_read_rejects_the_batch_and_fails_alone_as_decode_would(databases):
    table = f"bad_{uuid.uuid4().hex[:6]}"
    rng = random.Random(7)
    good = [record("r", n, 1000, n, values(rng), table) for n in range(100)]
    bad = record("r", 100, 1000, 100, {**values(rng), "d2": B64("AAAAA")}, table)  # not base64
    store = StateStore(databases["server"])
    try:
        with pytest.raises(SQLAlchemyError) as rejected:
            apply(store, [*good, bad], {(TOPIC, 0): 101}, defer=True)
        assert store_error(rejected.value, "x") is None  # a bad batch, not an outage: record by record
        assert not store.has_table(table) or store.count(table) == 0  # nothing of it was written
        with pytest.raises(DeferredDecodeError) as alone:
            apply(store, [bad], {(TOPIC, 0): 101}, defer=True)
        with pytest.raises(EventError) as at_decode:
            decode(bad)
        assert alone.value.reason == str(at_decode.value) and alone.value.where == f"{TOPIC}[0]@100"
    finally:
        store.close()


def test_a_consumer_of_a_postgresql_state_leaves_rows_to_it_unless_told_not_to(databases):
    store = StateStore(databases["server"])
    try:
        on = Consumer(store, [TOPIC], bootstrap_servers="127.0.0.1:1")
        off = Consumer(store, [TOPIC], bootstrap_servers="127.0.0.1:1",
                       config=ConsumerConfig(decode_in_database=False))
        assert on.decoder.defer is row_check and off.decoder.defer is None
        mapped = Consumer(store, [TOPIC], bootstrap_servers="127.0.0.1:1",
                          config=ConsumerConfig(topics=(TopicMapping(TOPIC, table="renamed"),)))
        assert mapped.decoder.defer is row_check  # the Decoder defers mirrored topics only:
        key, value = envelope("r", 1, 100, fields=FIELDS, after=after(1, NULLS))
        [event] = [mapped.decoder(Record(TOPIC, 0, 0, key, value)).event]
        assert event.deferred is None and event.table == "renamed"
        plain = on.decoder(Record(TOPIC, 0, 0, key, value)).event
        assert plain.deferred is not None
        reader = Consumer(store, [TOPIC], bootstrap_servers="127.0.0.1:1",
                          policy=RebuildPolicy(accept=lambda e: True))
        assert reader.decoder.defer is None  # a rebuild's filter reads the values
    finally:
        store.close()

import datetime as dt
import json
from decimal import Decimal

import pytest

from ecst.consumer.events import Record, decode
from ecst.consumer.positions import source_order
from ecst.exceptions import EventError
from tests.unit.consumer.envelopes import envelope, row


def rec(key, value, offset=0):
    return Record("producer.public.users", 0, offset, key, value)


def test_snapshot_row_with_schema_decodes_every_type():
    key, value = envelope("r", 1, 31583896, after=row(1), snapshot="first")
    e = decode(rec(key, value))
    assert (e.op, e.table, e.key, e.position, e.snapshot) == ("r", "users", {"id": 1}, 31583896, "first")
    assert e.after == {
        "id": 1, "email": "user1@example.com", "balance": Decimal("10.50"), "active": True,
        "birth_date": dt.date(2022, 1, 8), "last_login": dt.datetime(2024, 1, 1, 0, 34, 7, 123456),
        "created_at": dt.datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=dt.UTC), "bio": "hello",
    }


def test_streamed_changes_are_not_snapshot_rows():
    key, value = envelope("u", 1, 31586624, after=row(1, bio="changed"))
    e = decode(rec(key, value))
    assert e.op == "u" and e.snapshot is None and e.after["bio"] == "changed"


def test_delete_has_key_and_no_after():
    key, value = envelope("d", 7, 40, before={"id": 7})
    e = decode(rec(key, value))
    assert (e.op, e.key, e.after, e.position) == ("d", {"id": 7}, None, 40)


def test_tombstone_is_none():
    key, _ = envelope("d", 7, 40)
    assert decode(rec(key, None)) is None


def test_schemaless_envelope_passes_json_values_through():
    key, value = envelope("c", 3, 50, after={"id": 3, "email": "x@y", "balance": "12.30"}, schemas=False)
    e = decode(rec(key, value))
    assert e.key == {"id": 3} and e.after == {"id": 3, "email": "x@y", "balance": "12.30"}
    assert e.fields == ()


def test_truncate_has_no_key():
    _, value = envelope("t", 0, 99)
    e = decode(rec(None, value))
    assert (e.op, e.key, e.after, e.position) == ("t", {}, None, 99)


def test_positions_order_by_commit_not_by_statement():
    # recorded on the real stack (docs/positions.md): an initial-snapshot row, an incremental
    # chunk row, then the update of a transaction that was open while the chunk was read
    initial = source_order("r", {"lsn": 763384672, "sequence": '[null,"763384672"]', "snapshot": "true"})
    chunk = source_order("r", {"lsn": None, "sequence": '["773233832","773233832"]',
                               "snapshot": "incremental"})
    late_commit = source_order("u", {"lsn": 773231920, "sequence": '["773234968","773231920"]'})
    # (position, opening, anchor): the initial-snapshot row anchors its partition's floor
    assert initial == (763384672, False, True) and chunk == (773233832, False, False)
    assert late_commit == (773234968, False, False) and late_commit[0] > chunk[0]  # by lsn: loses
    with pytest.raises(EventError, match="no source position"):
        source_order("u", {"lsn": None, "sequence": None})
    with pytest.raises(EventError, match="not a list of LSNs"):
        source_order("u", {"lsn": 5, "sequence": "[x"})


def test_the_opening_transaction_of_a_stream_is_marked():
    # recorded on the real stack (issue 9): the first streamed transaction after an initial
    # snapshot has no previous commit; its change LSN lies below the snapshot's LSN
    snapshot_row = decode(rec(*envelope("r", 944, 33151760, after=row(944), snapshot="true")))
    opening = decode(rec(*envelope("u", 944, 33150000, after=row(944),
                                   sequence='[null,"33150000"]')))
    later = decode(rec(*envelope("u", 944, 33152000, after=row(944),
                                 sequence='["33151900","33152000"]')))
    assert (snapshot_row.anchor, snapshot_row.opening) == (True, False)
    assert (opening.anchor, opening.opening, opening.position) == (False, True, 33150000)
    assert (later.anchor, later.opening) == (False, False)


@pytest.mark.parametrize(
    "value, message",
    [
        (b"{not json", "not JSON"),
        (json.dumps({"hello": 1}).encode(), "not a Debezium change envelope"),
        (json.dumps({"op": "x", "source": {"table": "t"}}).encode(), "unknown op 'x'"),
        (json.dumps({"op": "c", "source": {}}).encode(), "no source.table"),
    ],
)
def test_unreadable_records_raise_event_error(value, message):
    key, _ = envelope("c", 1, 1)
    with pytest.raises(EventError, match=message):
        decode(rec(key, value))


def test_change_without_key_is_rejected_with_advice():
    _, value = envelope("c", 1, 1, after=row(1))
    with pytest.raises(EventError, match="primary key"):
        decode(rec(None, value))


# --- the flattened form of ExtractNewRecordState -------------------------------------------

def flat(payload, fields=None, key=1):
    schema = {"type": "struct", "fields": fields or [
        {"type": "int64", "optional": False, "field": "id"},
        {"type": "string", "optional": True, "field": "email"},
        {"type": "string", "optional": True, "field": "__op"},
        {"type": "int64", "optional": True, "field": "__lsn"},
        {"type": "string", "optional": True, "field": "__sequence"},
        {"type": "string", "optional": True, "field": "__deleted"}]}
    return rec(json.dumps({"schema": {"type": "struct", "fields": [
        {"type": "int64", "optional": False, "field": "id"}]}, "payload": {"id": key}}).encode(),
        json.dumps({"schema": schema, "payload": payload}).encode())


def test_flattened_upsert_takes_op_position_and_table_from_smt_fields():
    e = decode(flat({"id": 1, "email": "a@b", "__op": "u", "__lsn": 500, "__sequence": '["400","500"]',
                     "__deleted": "false"}))
    assert (e.op, e.table, e.key, e.after, e.position) == ("u", "users", {"id": 1},
                                                           {"id": 1, "email": "a@b"}, 500)
    assert [f.name for f in e.fields] == ["id", "email"]


def test_flattened_rewrite_delete_is_a_delete():
    e = decode(flat({"id": 1, "email": None, "__op": "d", "__lsn": 600, "__sequence": '["550","600"]',
                     "__deleted": "true"}))
    assert (e.op, e.after, e.position) == ("d", None, 600)


def test_flattened_without_sequence_says_which_smt_setting_to_add():
    # without __sequence, changes cannot be ordered by commit (docs/positions.md): rejected
    for payload in ({"id": 1, "email": "x", "__op": "c", "__deleted": "false"},
                    {"id": 1, "email": "x", "__op": "c", "__lsn": 500, "__deleted": "false"}):
        with pytest.raises(EventError, match="add 'lsn' and 'sequence' to the SMT's add.fields"):
            decode(flat(payload))


def test_flattened_incremental_rows_take_their_position_from_sequence():
    e = decode(flat({"id": 1, "email": "x", "__op": "r", "__lsn": None, "__sequence": '["700","710"]',
                     "__source_snapshot": "incremental", "__deleted": "false"}))
    assert (e.position, e.snapshot, e.anchor, e.opening) == (710, "incremental", False, False)


def test_flattened_rows_are_marked_for_commit_order_without_the_snapshot_field():
    initial = decode(flat({"id": 1, "email": "x", "__op": "r", "__lsn": 900, "__sequence": '[null,"900"]',
                           "__deleted": "false"}))
    opening = decode(flat({"id": 1, "email": "y", "__op": "u", "__lsn": 880, "__sequence": '[null,"880"]',
                           "__deleted": "false"}))
    assert (initial.anchor, opening.opening, opening.position) == (True, True, 880)


def test_flattened_schemaless_with_table_and_snapshot_fields():
    r = Record("t.public.users", 0, 0, b'{"id": 3}',
               json.dumps({"id": 3, "__op": "r", "__lsn": 7, "__sequence": '[null,"7"]',
                           "__table": "customers", "__source_snapshot": "last"}).encode())
    e = decode(r)
    assert (e.op, e.table, e.snapshot, e.after) == ("r", "customers", "last", {"id": 3})


# --- records that carry no row change ------------------------------------------------------

def test_heartbeats_and_transaction_metadata_are_ignored():
    heartbeat = json.dumps({"schema": {"type": "struct", "name": "io.debezium.connector.common.Heartbeat",
                                       "fields": []}, "payload": {"ts_ms": 1}}).encode()
    assert decode(rec(b'{"serverName": "producer"}', heartbeat)) is None
    assert decode(rec(None, b'{"ts_ms": 1795967829657}')) is None
    txn = json.dumps({"status": "END", "id": "571:53195832", "event_count": 2,
                      "data_collections": [], "ts_ms": 1}).encode()
    assert decode(rec(b'{"id": "571:53195832"}', txn)) is None


def test_composite_struct_keys():
    key = json.dumps({"schema": {"type": "struct", "fields": [
        {"type": "string", "optional": False, "field": "tenant"},
        {"type": "int64", "optional": False, "field": "id"}]},
        "payload": {"tenant": "acme", "id": 9}}).encode()
    _, value = envelope("c", 9, 10, after=row(9))
    assert decode(rec(key, value)).key == {"tenant": "acme", "id": 9}


def test_tombstones_with_and_without_a_schema_envelope():
    from ecst.consumer.events import is_tombstone

    assert is_tombstone(rec(b"{}", None))
    assert is_tombstone(rec(b"{}", b'{"schema": {"type": "struct"}, "payload": null}'))
    assert decode(rec(b"{}", b'{"schema": {"type": "struct"}, "payload": null}')) is None
    assert not is_tombstone(rec(b"{}", b'{"op": "c"}')) and not is_tombstone(rec(b"{}", b"garbage"))


# --- the embedded schema is parsed once per distinct schema ---------------------------------

def test_spaced_json_and_user_data_that_looks_like_the_layout_decode_the_same():
    from tests.unit.consumer.envelopes import compact

    key, value = envelope("c", 1, 10, after=row(1, bio='x,"payload":{"op":"d"}'))
    fast = decode(rec(key, value))
    spaced = decode(rec(key, json.dumps(json.loads(value)).encode()))  # not the converter's layout
    assert fast == spaced and fast.after["bio"] == 'x,"payload":{"op":"d"}'
    assert compact(json.loads(value)) == value


def test_a_changed_schema_gives_the_new_fields():
    from tests.unit.consumer.envelopes import ROW_FIELDS

    key, v1 = envelope("c", 1, 10, after=row(1))
    extra = [*ROW_FIELDS, {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "field": "d2"}]
    _, v2 = envelope("u", 1, 11, after={**row(1), "d2": 1}, fields=extra)
    assert "d2" not in [f.name for f in decode(rec(key, v1)).fields]
    e2 = decode(rec(key, v2))
    assert "d2" in [f.name for f in e2.fields] and str(e2.after["d2"]) == "1970-01-02"
    assert "d2" not in [f.name for f in decode(rec(key, v1)).fields]  # the old one is still right

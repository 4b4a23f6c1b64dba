"""Debezium signals and notifications, as data: what ecst sends and how it reads the answers."""

import json

import pytest

from ecst.connectors.signals import (
    Channels,
    SnapshotSignal,
    data_collection,
    new_signal_id,
    parse_notification,
)
from ecst.exceptions import ConfigError, EventError

CONFIG = {
    "topic.prefix": "producer",
    "table.include.list": "public.users",
    "signal.enabled.channels": "source,kafka",
    "signal.data.collection": "public.ecst_signal",
    "signal.kafka.topic": "producer.signals",
    "notification.enabled.channels": "sink",
    "notification.sink.topic.name": "producer.notifications",
}


def test_an_incremental_signal_with_a_filter_is_debeziums_execute_snapshot():
    s = SnapshotSignal("ecst-1", ("public.users",), "incremental", "id <= 10 OR id = 99")
    assert s.type == "execute-snapshot"
    # parenthesised: Debezium appends the filter to its key-range condition with AND
    assert s.data() == {"data-collections": ["public.users"], "type": "incremental", "additional-conditions":
                        [{"data-collection": "public.users", "filter": "(id <= 10 OR id = 99)"}]}
    # the Kafka channel takes the id from the value; without it Debezium cannot report on it
    assert json.loads(s.kafka_value()) == {"id": "ecst-1", "type": "execute-snapshot", "data": s.data()}


def test_a_blocking_signal_has_no_filter_and_bad_signals_are_refused():
    assert SnapshotSignal("x", ("public.users",), "blocking").data() == {
        "data-collections": ["public.users"], "type": "blocking"}
    with pytest.raises(ConfigError, match="incremental or blocking"):
        SnapshotSignal("x", ("public.users",), "initial")
    with pytest.raises(ConfigError, match="--where is empty"):
        SnapshotSignal("x", ("public.users",), "incremental", "  ")
    with pytest.raises(ConfigError, match="one SQL condition"):  # the lexical check (test_conditions)
        SnapshotSignal("x", ("public.users",), "incremental", "1=1; DROP TABLE users")
    with pytest.raises(ConfigError, match="at least one table"):
        SnapshotSignal("x", (), "incremental")


def test_signal_ids_fit_the_signal_tables_key_and_differ():
    a, b = new_signal_id(), new_signal_id()
    assert a != b and len(a) <= 42


def test_channels_come_from_the_connector_config_and_auto_prefers_the_table_ecst_can_reach():
    ch = Channels.of("users", CONFIG)
    assert (ch.signal_table, ch.kafka_topic, ch.notification_topic) == (
        "public.ecst_signal", "producer.signals", "producer.notifications")
    assert ch.choose("auto", table_reachable=True) == "source"  # Debezium's streaming thread acts on it
    assert ch.choose("auto") == "kafka" and ch.choose("source") == "source"
    assert ch.choose("kafka", table_reachable=True) == "kafka"
    table_only = Channels.of("users", {**CONFIG, "signal.enabled.channels": "source"})
    assert table_only.kafka_topic is None and table_only.choose("auto") == "source"
    kafka_only = Channels.of("users", {**CONFIG, "signal.enabled.channels": "kafka"})
    assert kafka_only.signal_table is None and kafka_only.choose("auto", table_reachable=True) == "kafka"
    with pytest.raises(ConfigError, match="signal.kafka.topic"):
        table_only.choose("kafka")


def test_missing_channels_name_the_config_key_to_set():
    bare = Channels.of("users", {"topic.prefix": "producer"})
    with pytest.raises(ConfigError, match="signal.data.collection"):
        bare.choose("auto")
    with pytest.raises(ConfigError, match="notification.sink.topic.name"):
        bare.require_notifications()
    with pytest.raises(ConfigError, match="has no topic.prefix"):
        Channels.of("users", {})


def test_a_topic_maps_to_its_data_collection():
    assert data_collection("producer.public.users", "producer") == "public.users"
    with pytest.raises(ConfigError, match="not one of the connector's"):
        data_collection("other.public.users", "producer")


def test_notifications_parse_with_or_without_the_embedded_schema():
    payload = {"id": "ecst-1", "aggregate_type": "Incremental Snapshot", "type": "TABLE_SCAN_COMPLETED",
               "additional_data": {"total_rows_scanned": "700", "connector_name": "t"}, "timestamp": 5}
    for doc in (payload, {"schema": {"type": "struct"}, "payload": payload}):
        n = parse_notification(json.dumps(doc).encode())
        assert (n.id, n.type, n.rows_scanned(), n.timestamp) == ("ecst-1", "TABLE_SCAN_COMPLETED", 700, 5)
    assert parse_notification(None) is None
    with pytest.raises(EventError, match="notification topic"):
        parse_notification(b'{"payload": {"op": "c"}, "schema": {}}')
    with pytest.raises(EventError, match="not JSON"):
        parse_notification(b"{")


def scan(status, collection="public.users"):
    return parse_notification(json.dumps({
        "id": "ecst-1", "aggregate_type": "Incremental Snapshot", "type": "TABLE_SCAN_COMPLETED",
        "additional_data": {"scanned_collection": collection, "total_rows_scanned": "0", "status": status},
        "timestamp": "1"}).encode())


def test_a_table_scan_debezium_ended_without_reading_the_table_is_a_failure():
    # as Debezium 3.6 reported a filter Postgres refused (a syntax error, permission denied)
    assert scan("SQL_EXCEPTION").scan_failure() == (
        "the scan of public.users ended with SQL_EXCEPTION: Debezium's query failed in the producer "
        "database (a syntax error in the filter, or a table, column or function the connector's role "
        "may not use)")
    assert "has no primary key" in scan("NO_PRIMARY_KEY").scan_failure()
    assert "table.include.list" in scan("UNKNOWN_SCHEMA").scan_failure()
    # a filter that matches nothing (EMPTY) is a success, and other notifications are no scans
    assert scan("SUCCEEDED").scan_failure() is None and scan("EMPTY").scan_failure() is None
    completed = parse_notification(json.dumps({"id": "ecst-1", "aggregate_type": "Incremental Snapshot",
                                               "type": "COMPLETED", "additional_data": {}}).encode())
    assert completed.scan_failure() is None

"""Debezium signals and notifications: ask a running connector for an ad-hoc snapshot, and
follow it to completion.

A signal reaches the connector through its signal table (`signal.data.collection`: ecst inserts
one row, which needs INSERT on that table) or through the Kafka signal channel
(`signal.kafka.topic`, one partition, records keyed by `topic.prefix`). Debezium reports the
snapshot's progress on the notification topic (`notification.sink.topic.name`); for an
incremental snapshot each notification's id is the signal's id.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ecst.connectors.conditions import check_condition
from ecst.exceptions import ConfigError, EventError

if TYPE_CHECKING:
    from ecst.kafka import KafkaSettings

INCREMENTAL, BLOCKING = "incremental", "blocking"
# Notification aggregate types: Debezium reports a blocking snapshot as an "Initial Snapshot".
INCREMENTAL_AGGREGATE = "Incremental Snapshot"
STARTED, IN_PROGRESS, TABLE_SCAN_COMPLETED, COMPLETED, ABORTED = (
    "STARTED", "IN_PROGRESS", "TABLE_SCAN_COMPLETED", "COMPLETED", "ABORTED")
# A TABLE_SCAN_COMPLETED's `status`: EMPTY is a table (or a filter) with no rows, which is fine.
SCAN_SUCCEEDED = frozenset({"SUCCEEDED", "EMPTY", ""})
SCAN_FAILURES = {
    "SQL_EXCEPTION": "Debezium's query failed in the producer database (a syntax error in the filter, or "
                     "a table, column or function the connector's role may not use)",
    "NO_PRIMARY_KEY": "{table} has no primary key, so Debezium cannot read it in key chunks",
    "UNKNOWN_SCHEMA": "the connector does not capture {table} (table.include.list)",
    "SKIPPED": "Debezium skipped {table}",
}


def new_signal_id() -> str:
    """A fresh signal id (the signal table's key is varchar(42))."""
    return f"ecst-{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class SnapshotSignal:
    """An `execute-snapshot` signal: which tables, which kind, and an optional row filter."""

    id: str
    data_collections: tuple[str, ...]
    kind: str = INCREMENTAL
    condition: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in (INCREMENTAL, BLOCKING):
            raise ConfigError(f"snapshot kind {self.kind!r}: expected incremental or blocking")
        if not self.data_collections:
            raise ConfigError("an execute-snapshot signal needs at least one table")
        if self.condition is not None:
            check_condition(self.condition)  # one condition, or a ConfigError

    @property
    def type(self) -> str:
        return "execute-snapshot"

    def data(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"data-collections": list(self.data_collections), "type": self.kind}
        if self.condition:
            # Debezium pastes the filter after its own key-range condition: parenthesised, an OR in
            # it cannot widen that range (check_condition keeps the parentheses balanced)
            doc["additional-conditions"] = [{"data-collection": c, "filter": f"({self.condition.strip()})"}
                                            for c in self.data_collections]
        return doc

    def kafka_value(self) -> bytes:
        # The Kafka channel reads the signal's id from the value (the key names the connector).
        return json.dumps({"id": self.id, "type": self.type, "data": self.data()}).encode()


@dataclass(frozen=True)
class Channels:
    """Where a connector listens for signals and reports notifications (from its config)."""

    prefix: str
    signal_table: str | None = None
    kafka_topic: str | None = None
    notification_topic: str | None = None
    tables: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, name: str, config: dict[str, str]) -> Channels:
        if not config.get("topic.prefix"):
            raise ConfigError(f"connector {name!r} has no topic.prefix in its config")
        enabled = {c.strip() for c in config.get("signal.enabled.channels", "source").split(",")}
        sinks = {c.strip() for c in config.get("notification.enabled.channels", "").split(",")}
        return cls(
            prefix=config.get("topic.prefix", ""),
            signal_table=config.get("signal.data.collection") if "source" in enabled else None,
            kafka_topic=config.get("signal.kafka.topic") if "kafka" in enabled else None,
            notification_topic=config.get("notification.sink.topic.name") if "sink" in sinks else None,
            tables=tuple(t.strip() for t in config.get("table.include.list", "").split(",") if t.strip()),
        )

    def choose(self, channel: str, table_reachable: bool = False) -> str:
        """The signal channel to use: `source` (the table), `kafka`, or `auto`: the table when the
        connector has one and ecst can write to it (`table_reachable`: the producer database is
        known), else Kafka if the connector listens there, else the table. Raises ConfigError
        naming the missing key.

        Why `auto` prefers the table: Debezium acts on a table signal on its streaming thread, but
        runs a Kafka signal's first snapshot chunk on its signal thread, racing the streaming thread
        over the snapshot's state (DBZ-8674). When that chunk ends the snapshot at once (a filter
        Postgres rejects, or one matching no rows), the race can fail the connector's task."""
        if channel == "auto":
            if self.signal_table and table_reachable:
                channel = "source"
            else:
                channel = "kafka" if self.kafka_topic else "source"
        if channel == "kafka" and not self.kafka_topic:
            raise ConfigError("the connector has no Kafka signal channel: set signal.kafka.topic and "
                              "add `kafka` to signal.enabled.channels, or use --channel source")
        if channel == "source" and not self.signal_table:
            raise ConfigError("the connector has no signal table: set signal.data.collection "
                              "(see deploy/sql/signal.sql and `ecst connectors doctor`)")
        if channel not in ("source", "kafka"):
            raise ConfigError(f"--channel {channel!r}: expected auto, source or kafka")
        return channel

    def require_notifications(self) -> str:
        if not self.notification_topic:
            raise ConfigError("the connector sends no notifications: set notification.enabled.channels"
                              "=sink and notification.sink.topic.name, then `ecst connectors apply`")
        return self.notification_topic


def data_collection(topic: str, prefix: str) -> str:
    """The table (`schema.table`) a Debezium change topic `<prefix>.<schema>.<table>` carries."""
    if not topic.startswith(prefix + "."):
        raise ConfigError(f"topic {topic!r} is not one of the connector's (topic.prefix {prefix!r})")
    return topic[len(prefix) + 1:]


@dataclass(frozen=True)
class Notification:
    """One Debezium notification."""

    id: str
    aggregate_type: str
    type: str
    data: dict[str, str]
    timestamp: int

    def rows_scanned(self) -> int | None:
        value = self.data.get("total_rows_scanned")
        return int(value) if value and value.isdigit() else None

    def scan_failure(self) -> str | None:
        """For a TABLE_SCAN_COMPLETED whose status says the table was not read (Debezium's
        SQL_EXCEPTION, NO_PRIMARY_KEY, UNKNOWN_SCHEMA or SKIPPED): why, in words; else None."""
        status = self.data.get("status", "")
        if self.type != TABLE_SCAN_COMPLETED or status in SCAN_SUCCEEDED:
            return None
        table = self.data.get("scanned_collection") or self.data.get("data_collection") or "the table"
        why = SCAN_FAILURES.get(status, "Debezium did not read it")
        return f"the scan of {table} ended with {status}: {why.format(table=table)}"


def parse_notification(raw: bytes | None) -> Notification | None:
    """A notification from the sink topic's record value (JSON, schema embedded or not)."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise EventError(f"notification is not JSON: {exc}") from exc
    if isinstance(doc, dict) and set(doc) == {"schema", "payload"}:
        doc = doc["payload"]
    if not isinstance(doc, dict) or not {"id", "type", "aggregate_type"} <= set(doc):
        raise EventError("notification lacks id, type or aggregate_type: is this the notification "
                         "topic (notification.sink.topic.name)?")
    return Notification(str(doc["id"]), str(doc["aggregate_type"]), str(doc["type"]),
                        {str(k): str(v) for k, v in (doc.get("additional_data") or {}).items()},
                        int(doc.get("timestamp") or 0))


def send_via_table(conn: Any, table: str, signal: SnapshotSignal) -> None:
    """Insert the signal into the connector's signal table (a psycopg connection)."""
    from psycopg import sql

    schema, _, name = table.rpartition(".")
    ident = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    conn.execute(sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(ident),
                 (signal.id, signal.type, json.dumps(signal.data())))


def send_via_kafka(bootstrap: KafkaSettings | str, topic: str, prefix: str, signal: SnapshotSignal) -> None:
    """Produce the signal to the Kafka signal channel (creating the one-partition topic if the
    broker does not have it yet)."""
    from ecst import kafka

    kafka.ensure_topic(bootstrap, topic)  # Debezium reads partition 0 of it
    producer = kafka.producer(bootstrap)
    try:
        with kafka.reaching(kafka.as_settings(bootstrap), f"send the signal to {topic} on"):
            producer.send(topic, key=prefix.encode(), value=signal.kafka_value()).get(timeout=30)
    finally:
        producer.close()

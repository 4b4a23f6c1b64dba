"""The decode and map stages of the consumer: a Kafka record becomes a mapped change event, an
ignorable record (a heartbeat, transaction metadata, a filtered-out row) or an error for the
dead-letter topic. `check_mappings` runs the map stage over each topic's latest records before
anything is written, so a mapping that does not fit fails first."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from ecst import kafka
from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.events import ChangeEvent, Deferral, Record, decode, is_tombstone, tombstone_delete
from ecst.consumer.mapping import check_mapping, map_event
from ecst.exceptions import EventError

PEEK_RECORDS = 50  # per partition: the latest records a mapping is checked against


@dataclass
class Decoded:
    """One record after the decode and map stages: an event, nothing (ignored), or an error."""

    record: Record
    event: ChangeEvent | None = None
    error: str | None = None


class Decoder:
    """Decodes and maps the records of the configured topics. It remembers each topic's source
    table, since a Kafka tombstone (null value) names none and a routed topic's name may differ."""

    def __init__(self, config: ConsumerConfig,
                 accept: Callable[[ChangeEvent], bool] | None = None,
                 defer: Deferral | None = None) -> None:
        self.placeholder = config.placeholder
        self.mappings = {m.topic: m for m in config.topics}
        self.accept = accept  # events it rejects are ignored like heartbeats (a filtered backfill)
        # rows left to the database to decode (StateStore.deferral): only where nothing reads
        # their values before the writer, i.e. a topic mirrored as it is, with no `accept`
        self.defer = defer if accept is None else None
        self.source_tables: dict[str, str] = {}  # topic -> source table of its latest change event

    def __call__(self, message: Any) -> Decoded:
        """Decode one `Record`, or kafka-python message (anything with topic, partition, offset,
        key, value)."""
        record = message if isinstance(message, Record) else Record(
            message.topic, message.partition, message.offset, message.key, message.value,
            _timestamp(getattr(message, "timestamp", None)))
        mapping = self.mappings.get(record.topic)
        if mapping is None:  # a topic the config does not name (a subscription pattern): mirrored
            mapping = self.mappings[record.topic] = TopicMapping(record.topic)
        try:
            event = decode(record, self.placeholder, self.defer if mapping.mirrors else None)
            if event is not None:
                self.source_tables[record.topic] = event.table
            elif mapping.tombstones == "delete" and is_tombstone(record):
                event = tombstone_delete(record, self.source_tables.get(record.topic))
            if event is not None:
                event = map_event(event, mapping)
                if self.accept is not None and not self.accept(event):
                    event = None
            return Decoded(record, event)
        except EventError as exc:
            return Decoded(record, error=str(exc))


def check_mappings(config: ConsumerConfig, settings: kafka.KafkaSettings | str,
                   timeout_s: float = 10.0) -> None:
    """Check each mapped topic's key and columns against its latest records, before anything is
    written: a mapping naming a column the records lack is a ConfigError naming topic and column.
    Mirrored topics need no check; a topic with no records yet is checked as its records arrive."""
    mapped = [m for m in config.topics if not m.mirrors]
    if not mapped:
        return
    settings = kafka.as_settings(settings)
    reader = kafka.consumer(settings, group_id=None)
    try:
        for mapping in mapped:
            with kafka.reaching(settings, f"read topic {mapping.topic} from"):
                records = _latest_records(reader, mapping.topic, timeout_s)
            for record in records:
                try:
                    event = decode(record, config.placeholder)
                except EventError:
                    continue  # a bad record is the dead-letter path's business, not the mapping's
                if event is not None:
                    check_mapping(event, mapping)
    finally:
        reader.close()


def _latest_records(reader: KafkaConsumer, topic: str, timeout_s: float) -> list[Record]:
    parts = reader.partitions_for_topic(topic)
    if not parts:
        return []
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    reader.assign(tps)
    ends, begins = reader.end_offsets(tps), reader.beginning_offsets(tps)
    todo = {tp for tp in tps if ends[tp] > begins[tp]}
    for tp in todo:
        reader.seek(tp, max(begins[tp], ends[tp] - PEEK_RECORDS))
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while todo and time.monotonic() < deadline:
        for tp, messages in reader.poll(timeout_ms=500).items():  # in kafka.reaching: codec errors too
            out += [Record(m.topic, m.partition, m.offset, m.key, m.value) for m in messages]
            if messages and messages[-1].offset >= ends[tp] - 1:
                todo.discard(tp)
    return out


def _timestamp(value: Any) -> int | None:
    """A kafka-python record's timestamp in ms, None when it has none (-1)."""
    return value if isinstance(value, int) and value >= 0 else None

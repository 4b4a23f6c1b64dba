"""The consumer loop: poll a batch from Kafka, decode, apply in one transaction, repeat.

Offsets live in the state store. On every partition assignment the consumer seeks to the
offsets stored there (the beginning of the topic if none), so a crash between the state commit
and the Kafka commit loses nothing and applies nothing twice in effect. Kafka offsets are
committed too, after the state, only so that lag tools see progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from ecst.consumer.events import ChangeEvent, Record, decode
from ecst.consumer.snapshots import MARKERS, snapshot_transitions
from ecst.consumer.store import (
    SNAPSHOT_COMPLETE,
    SNAPSHOT_PENDING,
    ApplyStats,
    SnapshotState,
    StateStore,
)
from ecst.consumer.types import DEFAULT_PLACEHOLDER
from ecst.exceptions import EventError, StackError

log = logging.getLogger(__name__)



class _SeekToStoredOffsets(ConsumerRebalanceListener):
    """On assignment, position every partition at the offset the state store holds."""

    def __init__(self, consumer: KafkaConsumer, store: StateStore) -> None:
        self.consumer = consumer
        self.store = store

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Batches are applied between polls, so nothing is in flight when this runs.
        log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        stored = self.store.stored_offsets()
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        log.info(
            "partitions assigned: %s",
            ", ".join(
                f"{tp.topic}[{tp.partition}]@{stored.get((tp.topic, tp.partition), 'beginning')}"
                for tp in sorted(assigned)
            ),
        )


@dataclass
class RunStats:
    """Totals of one `Consumer.run`."""

    batches: int = 0
    records: int = 0
    tombstones: int = 0
    apply: ApplyStats = field(default_factory=ApplyStats)


class Consumer:
    """Applies Debezium change topics to a `StateStore`."""

    def __init__(
        self,
        store: StateStore,
        topics: list[str],
        *,
        bootstrap_servers: str,
        group_id: str,
        batch_size: int = 2000,
        poll_timeout_ms: int = 500,
        placeholder: str = DEFAULT_PLACEHOLDER,
        client_id: str = "ecst-consumer",
    ) -> None:
        self.store = store
        self.topics = list(topics)
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.batch_size = batch_size
        self.poll_timeout_ms = poll_timeout_ms
        self.placeholder = placeholder
        self.client_id = client_id
        self.stats = RunStats()
        self._kafka: KafkaConsumer | None = None

    def _connect(self) -> KafkaConsumer:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers.split(","),
                group_id=self.group_id,
                client_id=self.client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.batch_size,
                request_timeout_ms=30000,
            )
        except KafkaError as exc:
            raise StackError(
                f"couldn't connect to Kafka at {self.bootstrap_servers}: {exc} "
                "(is the stack up? `ecst stack status`)"
            ) from exc
        return consumer

    def _wait_for_topics(self, consumer: KafkaConsumer, timeout_s: float) -> list[TopicPartition]:
        deadline = time.monotonic() + timeout_s
        while True:
            missing = []
            partitions = []
            for topic in self.topics:
                ids = consumer.partitions_for_topic(topic)
                if not ids:
                    missing.append(topic)
                else:
                    partitions += [TopicPartition(topic, p) for p in sorted(ids)]
            if not missing:
                return partitions
            if time.monotonic() > deadline:
                raise StackError(
                    f"topic(s) {', '.join(missing)} do not exist after {timeout_s:.0f} s: "
                    "is the connector running? (`ecst connectors status`)"
                )
            time.sleep(0.5)
            consumer.topics()  # refresh metadata

    def run(
        self,
        *,
        until_caught_up: bool = False,
        until_ready: bool = False,
        stop: threading.Event | None = None,
        topic_timeout_s: float = 120.0,
        on_batch: Callable[[ApplyStats], None] | None = None,
    ) -> RunStats:
        """Consume until `stop` is set, or (with `until_caught_up`) until every partition's
        applied offset reaches the end offset the topic had when the run started, or (with
        `until_ready`) until every topic's snapshot has been completely applied."""
        stop = stop or threading.Event()
        consumer = self._kafka = self._connect()
        try:
            targets: dict[TopicPartition, int] = {}
            beginnings: dict[TopicPartition, int] = {}
            if until_caught_up:
                partitions = self._wait_for_topics(consumer, topic_timeout_s)
                targets = consumer.end_offsets(partitions)
                beginnings = consumer.beginning_offsets(partitions)
                log.info("catching up to end offsets %s", _fmt(targets))
            consumer.subscribe(self.topics, listener=_SeekToStoredOffsets(consumer, self.store))
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.batch_size)
                if polled:
                    batch_stats = self._apply(consumer, polled)
                    if on_batch is not None:
                        on_batch(batch_stats)
                if until_caught_up and self._caught_up(consumer, targets, beginnings):
                    break
                if until_ready:
                    self._complete_snapshots()  # also after a crash between the two commits
                    if self.ready():
                        break
        finally:
            try:
                consumer.close(autocommit=False)
            except KafkaError:
                log.warning("error while closing the Kafka consumer", exc_info=True)
            self._kafka = None
        return self.stats

    def _apply(self, consumer: KafkaConsumer, polled: dict) -> ApplyStats:
        events: list[ChangeEvent] = []
        next_offsets: dict[tuple[str, int], int] = {}
        tombstones = 0
        for tp, messages in polled.items():
            for m in messages:
                record = Record(m.topic, m.partition, m.offset, m.key, m.value)
                try:
                    event = decode(record, self.placeholder)
                except EventError as exc:
                    raise EventError(
                        f"{m.topic}[{m.partition}]@{m.offset}: {exc}; the state is unchanged "
                        "from the last good batch"
                    ) from exc
                if event is None:
                    tombstones += 1
                else:
                    events.append(event)
                next_offsets[(tp.topic, tp.partition)] = m.offset + 1
        snapshots = self._snapshot_progress(consumer, events)
        started = time.monotonic()
        stats = self.store.apply(events, next_offsets, snapshots)
        self._complete_snapshots()
        took_ms = (time.monotonic() - started) * 1000
        try:
            consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                             for (t, p), o in next_offsets.items()})
        except KafkaError as exc:  # the state store holds the truth; this is for lag tools
            log.warning("Kafka offset commit failed (state is committed): %s", exc)
        self.stats.batches += 1
        self.stats.records += sum(len(v) for v in polled.values())
        self.stats.tombstones += tombstones
        self.stats.apply.merge(stats)
        log.info(
            "applied batch of %d records (%s, %d tombstones, %d stale) in %.0f ms",
            sum(len(v) for v in polled.values()),
            " ".join(f"{op}={n}" for op, n in sorted(stats.by_op.items())) or "no changes",
            tombstones,
            stats.stale,
            took_ms,
        )
        return stats

    def _snapshot_progress(
        self, consumer: KafkaConsumer, events: list[ChangeEvent]
    ) -> dict[str, SnapshotState]:
        def end_offsets(topic: str) -> dict[int, int]:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            return {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}

        if not any(e.snapshot in MARKERS for e in events):
            return {}
        return snapshot_transitions(events, self.store.snapshot_states(), end_offsets)

    def _complete_snapshots(self) -> None:
        stored = self.store.stored_offsets()
        for topic, snap in self.store.snapshot_states().items():
            if snap.state == SNAPSHOT_PENDING and all(
                stored.get((topic, p), 0) >= end for p, end in snap.targets.items()
            ):
                self.store.mark_snapshot_complete(topic)
                log.info("snapshot of %s completely applied", topic)

    def ready(self) -> bool:
        """True once the snapshot of every subscribed topic has been completely applied."""
        states = self.store.snapshot_states()
        return all(t in states and states[t].state == SNAPSHOT_COMPLETE for t in self.topics)

    def _caught_up(
        self,
        consumer: KafkaConsumer,
        targets: dict[TopicPartition, int],
        beginnings: dict[TopicPartition, int],
    ) -> bool:
        stored = self.store.stored_offsets()
        assigned = consumer.assignment()
        for tp, end in targets.items():
            if beginnings.get(tp, 0) >= end:
                continue  # nothing to read in this partition
            progress = stored.get((tp.topic, tp.partition), 0)
            if tp in assigned:
                try:
                    progress = max(progress, consumer.position(tp, timeout_ms=5000) or 0)
                except KafkaError:
                    pass
            if progress < end:
                return False
        return True


def _fmt(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(offsets.items()))

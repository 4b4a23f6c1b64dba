"""The consumer loop: poll a batch from Kafka, decode, map, apply in one transaction, repeat.

Offsets live in the state store. On every partition assignment the consumer seeks to the
offsets stored there (the beginning of the topic if none), so a crash between the state commit
and the Kafka commit loses nothing and applies nothing twice in effect. Kafka offsets are
committed too, after the state, only so that lag tools see progress.

A record that cannot be decoded, or that the database rejects, goes to the dead-letter topic
(with headers naming the error, topic, partition and offset) before the offsets that pass it are
committed; with `fail_fast`, or without a dead-letter topic, the consumer stops instead and the
state stays at the last good batch.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import FencedInstanceIdError, KafkaError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import SQLAlchemyError

from ecst.consumer.config import (
    ConsumerConfig,
    TopicMapping,
    check_config,
    check_mapping,
    map_event,
)
from ecst.consumer.events import ChangeEvent, Record, decode, is_tombstone, tombstone_delete
from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import Backoff, StoreHealth, wait_for_store
from ecst.consumer.snapshots import MARKERS, snapshot_transitions
from ecst.consumer.store import (
    SNAPSHOT_COMPLETE,
    SNAPSHOT_PENDING,
    ApplyStats,
    SnapshotState,
    StaleStateError,
    StateStore,
)
from ecst.exceptions import (
    ConfigError,
    EventError,
    StackError,
    StateStoreError,
    StateStoreUnavailableError,
)
from ecst.kafka import ensure_topic

log = logging.getLogger(__name__)
PURGE_EVERY_S = 600.0
REBUILD_CHECK_S = 5.0  # how often the loop looks for a rebuild's progress (for /metrics)
DLQ_MAX_BYTES = 16 * 1024 * 1024  # the dead-letter topic's max.message.bytes and the producer's
DLQ_MAX_VALUE = DLQ_MAX_BYTES - 1024 * 1024  # a larger value is dropped (its headers name it)
MEMBERSHIP_CHECK_S = 10.0  # an idle static member commits this often, to learn it was fenced
PEEK_RECORDS = 50  # per partition: the latest records a mapping is checked against


def check_mappings(config: ConsumerConfig, bootstrap_servers: str, timeout_s: float = 10.0) -> None:
    """Check each mapped topic's key and columns against its latest records, before anything is
    written: a mapping naming a column the records lack is a ConfigError naming topic and column.
    Mirrored topics need no check; a topic with no records yet is checked as its records arrive."""
    mapped = [m for m in config.topics if not m.mirrors]
    if not mapped:
        return
    try:
        reader = KafkaConsumer(bootstrap_servers=bootstrap_servers.split(","), enable_auto_commit=False,
                               group_id=None, request_timeout_ms=30000)
    except KafkaError as exc:
        raise StackError(f"couldn't connect to Kafka at {bootstrap_servers}: {exc}") from exc
    try:
        for mapping in mapped:
            for record in _latest_records(reader, mapping.topic, timeout_s):
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
        for tp, messages in reader.poll(timeout_ms=500).items():
            out += [Record(m.topic, m.partition, m.offset, m.key, m.value) for m in messages]
            if messages and messages[-1].offset >= ends[tp] - 1:
                todo.discard(tp)
    return out


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    """On assignment, position every partition at the offset the state store holds."""

    def __init__(self, consumer: KafkaConsumer, store: StateStore, health: StoreHealth) -> None:
        self.consumer = consumer
        self.store = store
        self.health = health

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Batches are applied between polls, so nothing is in flight when this runs.
        log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # While the store is away its offsets are unknown: the partitions stay paused (the
        # consumer keeps its place in the group) and are positioned when the store is back.
        if not self.health.up:
            self.consumer.pause(*assigned)
            return
        try:
            self.seek_all(assigned)
        except StateStoreUnavailableError as exc:
            self.consumer.pause(*assigned)
            self.health.lost(exc)
        except Exception:
            log.exception("could not seek to the stored offsets on assignment")
            raise

    def seek_all(self, assigned: list[TopicPartition],
                 stored: dict[tuple[str, int], int] | None = None) -> None:
        """Position each partition at the stored offset (the beginning if none)."""
        stored = self.store.stored_offsets() if stored is None else stored
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
    ignored: int = 0  # Kafka tombstones, heartbeats, transaction metadata
    dead_lettered: int = 0
    apply: ApplyStats = field(default_factory=ApplyStats)
    # Why a topic yielded nothing, for `ecst consume`: records read per topic, and the topics
    # that held no record at all when the run started (e.g. their connector's task failed).
    by_topic: dict[str, int] = field(default_factory=dict)
    empty_at_start: set[str] = field(default_factory=set)


@dataclass
class _Decoded:
    record: Record
    event: ChangeEvent | None = None
    error: str | None = None


class Consumer:
    """Applies Debezium change topics to a `StateStore`."""

    def __init__(
        self,
        store: StateStore,
        topics: list[str] | None = None,
        *,
        bootstrap_servers: str,
        group_id: str | None = None,
        batch_size: int | None = None,
        config: ConsumerConfig | None = None,
        poll_timeout_ms: int = 500,
        metrics: Metrics | None = None,
        client_id: str = "ecst-consumer",
        accept: Callable[[ChangeEvent], bool] | None = None,
        cold_start_completes: bool = True,
        mappings_checked: bool = False,
        health: StoreHealth | None = None,
    ) -> None:
        config = config or ConsumerConfig()
        if topics:
            config = config.with_(topics=tuple(config.mapping(t) for t in topics))
        self.config = check_config(config.with_(group_id=group_id, batch_size=batch_size))
        self.store = store
        self.topics = [m.topic for m in self.config.topics]
        self.mappings: dict[str, TopicMapping] = {m.topic: m for m in self.config.topics}
        self.bootstrap_servers = bootstrap_servers
        self.poll_timeout_ms = poll_timeout_ms
        self.client_id = client_id
        self.metrics = metrics or Metrics()
        self.health = health or StoreHealth(self.metrics)  # is the state store answering?
        self.stats = RunStats()
        self.last_loop = time.monotonic()
        self._producer: KafkaProducer | None = None
        self._caught_up_once = False
        self._last_purge = 0.0
        self._snapshots: dict[str, SnapshotState] = {}  # as of the loop's latest turn
        self.accept = accept  # events it rejects are skipped like heartbeats (a filtered backfill)
        self.cold_start_completes = cold_start_completes  # see _complete_cold_start
        self._streamed: set[str] = set()  # topics where a streamed (non-snapshot) change was read
        self._rebuild_checked = 0.0
        self.mappings_checked = mappings_checked  # `check_mappings` ran already (before the store)
        self._source_tables: dict[str, str] = {}  # topic -> source table of its latest change event
        self._topics_present: dict[str, bool] = {}
        self._cold: list[str] = []  # topics started without stored offsets, not decided yet
        self._last_commit = time.monotonic()  # of offsets to Kafka

    # -- Kafka plumbing -------------------------------------------------------------------
    def _connect(self) -> KafkaConsumer:
        try:
            return KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers.split(","),
                group_id=self.config.group_id,
                # static membership: a restarted member takes its partitions back at once
                group_instance_id=self.config.group_instance_id or None,
                client_id=self.client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.config.batch_size,
                request_timeout_ms=30000,
            )
        except KafkaError as exc:
            raise StackError(
                f"couldn't connect to Kafka at {self.bootstrap_servers}: {exc} "
                "(is the stack up? `ecst stack status`)"
            ) from exc

    def _dead_letter_producer(self) -> KafkaProducer:
        if self._producer is None:
            ensure_topic(self.bootstrap_servers, self.config.dead_letter_topic,
                         configs={"max.message.bytes": str(DLQ_MAX_BYTES)})
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers.split(","),
                                           acks="all", client_id=f"{self.client_id}-dlq",
                                           max_request_size=DLQ_MAX_BYTES)
        return self._producer

    def _wait_for_topics(self, consumer: KafkaConsumer, timeout_s: float) -> list[TopicPartition]:
        deadline = time.monotonic() + timeout_s
        while True:
            missing, partitions = [], []
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

    # -- the loop -------------------------------------------------------------------------
    def run(
        self,
        *,
        until_caught_up: bool = False,
        until_ready: bool = False,
        stop: threading.Event | None = None,
        topic_timeout_s: float = 120.0,
        on_batch: Callable[[ApplyStats], None] | None = None,
        until: Callable[[], bool] | None = None,
    ) -> RunStats:
        """Consume until `stop` is set, or (with `until_caught_up`) until every partition's
        applied offset reaches the end offset the topic had when the run started, or (with
        `until_ready`) until every topic's snapshot has been completely applied, or until
        `until()` (asked once per loop turn) returns True."""
        stop = stop or threading.Event()
        consumer = self._connect()
        self.metrics.set("ecst_kafka_up", 1.0)
        try:
            partitions = self._wait_for_topics(consumer, topic_timeout_s)
            if not self.mappings_checked:
                check_mappings(self.config, self.bootstrap_servers)
            targets = consumer.end_offsets(partitions)
            beginnings = consumer.beginning_offsets(partitions)
            log.info("end offsets at start: %s", _fmt(targets))
            self.stats.empty_at_start = {t for t in self.topics if all(
                beginnings.get(tp, 0) >= end for tp, end in targets.items() if tp.topic == t)}
            stored = wait_for_store(self.store.stored_offsets, self.health, stop,
                                    lambda seconds: self._idle(seconds, stop))
            if stored is None:
                return self.stats  # stopped while the store was away
            self._cold = [t for t in self.topics if self.cold_start_completes
                          and not any(k[0] == t for k in stored)]
            self._listener = _SeekToStoredOffsets(consumer, self.store, self.health)
            consumer.subscribe(self.topics, listener=self._listener)
            while not stop.is_set():
                self.last_loop = time.monotonic()
                try:
                    if self._turn(consumer, targets, beginnings, until_caught_up, until_ready,
                                  on_batch, until):
                        break
                except StateStoreUnavailableError as exc:
                    self.health.lost(exc)
                    self._wait_out_outage(consumer, stop)
                except KafkaError as exc:
                    if not exc.retriable:
                        raise
                    self._wait_out_kafka(consumer, stop, exc)
        except FencedInstanceIdError as exc:
            raise ConfigError(
                f"another consumer joined group {self.config.group_id!r} with this one's group instance "
                f"id {self.config.group_instance_id!r}, so Kafka fenced this one: give each process its own "
                "(--group-instance-id, kafka.group_instance_id or ECST_GROUP_INSTANCE_ID)") from exc
        finally:
            try:
                consumer.close(autocommit=False)
            except KafkaError:
                log.warning("error while closing the Kafka consumer", exc_info=True)
            if self._producer is not None:
                self._producer.close()
                self._producer = None
        return self.stats

    def _turn(self, consumer: KafkaConsumer, targets: dict[TopicPartition, int],
              beginnings: dict[TopicPartition, int], until_caught_up: bool, until_ready: bool,
              on_batch: Callable[[ApplyStats], None] | None, until: Callable[[], bool] | None) -> bool:
        """One turn of the loop: poll, apply, bookkeeping. True when the run is done."""
        polled = consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.config.batch_size)
        if not self.health.up:  # the store went away during a rebalance (the listener saw it)
            raise StateStoreUnavailableError(self.health.error)
        if polled:
            try:
                batch_stats = self._apply(consumer, polled)
            except StaleStateError:  # a rebuild was swapped in: its offsets rule now
                log.warning("the state was replaced by a rebuild: re-reading its offsets")
                self.store.refresh()
                self._listener.seek_all(list(consumer.assignment()))
                return False
            if on_batch is not None:
                on_batch(batch_stats)
        self._complete_snapshots()  # also after a crash between the two commits
        caught_up = self._caught_up(consumer, targets, beginnings)
        self._caught_up_once = self._caught_up_once or caught_up
        if caught_up and self._cold:
            self._cold = self._complete_cold_start(self._cold)
        self._observe(consumer)
        self._confirm_membership(consumer)
        self._maybe_purge()
        return ((until_caught_up and caught_up) or (until_ready and self.snapshot_applied())
                or (until is not None and until()))

    def _wait_out_outage(self, consumer: KafkaConsumer, stop: threading.Event) -> None:
        """Wait for the state store with every partition paused, polling all the while so that
        the consumer keeps its place in the group (max.poll.interval.ms) and follows rebalances;
        then position every partition at the offsets the store holds and resume. The batch that
        failed wrote nothing, so it is read again."""
        consumer.pause(*consumer.assignment())
        self.metrics.set("ecst_ready", 0.0)

        def idle(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while not stop.is_set() and time.monotonic() < deadline:
                self.last_loop = time.monotonic()
                consumer.pause(*consumer.assignment())  # also partitions a rebalance brought
                consumer.poll(timeout_ms=max(1, min(self.poll_timeout_ms,
                                                    int((deadline - time.monotonic()) * 1000))))

        stored = wait_for_store(self.store.stored_offsets, self.health, stop, idle)
        if stored is None:
            return
        assigned = list(consumer.assignment())
        self._listener.seek_all(assigned, stored)
        consumer.resume(*assigned)

    def _wait_out_kafka(self, consumer: KafkaConsumer, stop: threading.Event, exc: KafkaError) -> None:
        """Kafka is unreachable (a broker restarting, a network cut): wait for it with capped
        backoff, then position every partition at the offsets the state holds again, since a turn
        cut short may have read records it did not apply. The copy keeps serving meanwhile."""
        self.metrics.set("ecst_kafka_up", 0.0)
        log.warning("Kafka is unreachable (%s): waiting for it; the state keeps what was applied", exc)
        started, backoff = time.monotonic(), Backoff()
        while not stop.is_set():
            self._idle(backoff.next(), stop)
            try:
                consumer.topics()  # a metadata request: answered once a broker is back
            except KafkaError as again:
                log.debug("Kafka still unreachable: %s", again)
                continue
            self._listener.seek_all(list(consumer.assignment()))
            self.metrics.set("ecst_kafka_up", 1.0)
            log.warning("Kafka reachable again after %.0f s: reading on from the state's offsets",
                        time.monotonic() - started)
            return

    def _idle(self, seconds: float, stop: threading.Event) -> None:
        """Wait (before subscribing) while the loop counts as alive for /healthz."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            self.last_loop = time.monotonic()
            stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))

    def _decode(self, m: object) -> _Decoded:
        record = Record(m.topic, m.partition, m.offset, m.key, m.value)
        mapping = self.mappings.get(record.topic, TopicMapping(record.topic))
        try:
            event = decode(record, self.config.placeholder)
            if event is not None:
                self._source_tables[record.topic] = event.table
            elif mapping.tombstones == "delete" and is_tombstone(record):
                # the table of the topic's change events (a routed topic's name may differ)
                event = tombstone_delete(record, self._source_tables.get(record.topic))
            if event is not None:
                event = map_event(event, mapping)
                if self.accept is not None and not self.accept(event):
                    event = None
            return _Decoded(record, event)
        except EventError as exc:
            return _Decoded(record, error=str(exc))

    def _apply(self, consumer: KafkaConsumer, polled: dict) -> ApplyStats:
        items = [self._decode(m) for messages in polled.values() for m in messages]
        started = time.monotonic()
        bad = [d for d in items if d.error]
        if bad and self._stop_on_error():
            d = bad[0]
            raise EventError(f"{_where(d.record)}: {d.error}; the state is unchanged from the last "
                             "good batch")
        good = [d for d in items if not d.error]
        try:
            if bad:
                self._dead_letter(bad, stage="decode")
            stats = self._apply_items(consumer, items, good)
        except StateStoreError:
            raise  # the database itself is unavailable or unusable: nothing to dead-letter
        except SQLAlchemyError as exc:
            if self._stop_on_error():
                raise EventError(f"batch rejected by the state store: {exc}; the state is "
                                 "unchanged from the last good batch") from exc
            log.warning("batch rejected by the state store (%s): applying record by record", exc)
            stats = self._apply_one_by_one(consumer, items)
        took = time.monotonic() - started
        self.metrics.observe_batch(took)
        self._commit_kafka(consumer, _next_offsets(items))
        ignored = sum(1 for d in items if d.event is None and not d.error)
        self.stats.batches += 1
        self.stats.records += len(items)
        for d in items:
            self.stats.by_topic[d.record.topic] = self.stats.by_topic.get(d.record.topic, 0) + 1
        self.stats.ignored += ignored
        self.stats.apply.merge(stats)
        self.metrics.inc("ecst_batches_total")
        self.metrics.inc("ecst_records_ignored_total", ignored)
        self.metrics.inc("ecst_events_stale_total", stats.stale)
        for (op, table), n in stats.by_table_op.items():
            self.metrics.inc("ecst_events_applied_total", n, op=op, table=table)
        newest = max((d.event.ts_ms for d in good if d.event and d.event.ts_ms), default=None)
        if newest:
            self.metrics.set("ecst_replication_delay_seconds", max(0.0, time.time() - newest / 1000))
        log.info(
            "applied batch of %d records (%s, %d ignored, %d stale, %d dead-lettered) in %.0f ms",
            len(items), " ".join(f"{op}={n}" for op, n in sorted(stats.by_op.items())) or "no changes",
            ignored, stats.stale, len(bad), took * 1000,
        )
        return stats

    def _apply_items(self, consumer: KafkaConsumer, items: list[_Decoded], good: list[_Decoded]
                     ) -> ApplyStats:
        events = [d.event for d in good if d.event is not None]
        self._streamed.update(e.topic for e in events if e.snapshot is None)
        snapshots = self._snapshot_progress(consumer, events)
        # An outage raises StateStoreUnavailableError: the loop waits it out and reads this batch
        # again; any other database error rejects the batch.
        return self.store.apply(events, _next_offsets(items), snapshots)

    def _apply_one_by_one(self, consumer: KafkaConsumer, items: list[_Decoded]) -> ApplyStats:
        """Slow path after a rejected batch: each record alone; the rejected ones are
        dead-lettered before the offset that passes them is stored."""
        total = ApplyStats()
        for d in items:
            offsets = _next_offsets([d])
            if d.error or d.event is None:
                self.store.apply([], offsets)  # already dead-lettered, or no change
                continue
            try:
                total.merge(self._apply_items(consumer, [d], [d]))
            except SQLAlchemyError as exc:
                d.error = f"rejected by the state store: {getattr(exc, 'orig', None) or exc}"
                self._dead_letter([d], stage="apply")
                self.store.apply([], offsets)
        return total

    def _stop_on_error(self) -> bool:
        return self.config.fail_fast or not self.config.dead_letter_topic

    def _dead_letter(self, items: list[_Decoded], stage: str) -> None:
        producer = self._dead_letter_producer()
        sent = []
        for d in items:
            r = d.record
            headers = [
                ("ecst.error", (d.error or "").encode()),
                ("ecst.stage", stage.encode()),
                ("ecst.source.topic", r.topic.encode()),
                ("ecst.source.partition", str(r.partition).encode()),
                ("ecst.source.offset", str(r.offset).encode()),
            ]
            value = r.value
            if value is not None and len(value) > DLQ_MAX_VALUE:  # the source offset finds it
                headers.append(("ecst.value.dropped", str(len(value)).encode()))
                value = None
            sent.append((r, producer.send(self.config.dead_letter_topic, key=r.key, value=value,
                                          headers=headers)))
            log.error("dead-lettered %s (%s): %s", _where(r), stage, d.error)
            self.metrics.inc("ecst_dead_lettered_total", stage=stage)
        producer.flush(timeout=30)
        for r, future in sent:  # durable in Kafka before the offsets that skip them move on
            try:
                future.get(timeout=30)
            except KafkaError as exc:
                if exc.retriable:
                    raise  # Kafka is away: the loop waits for it, then reads this batch again
                raise StackError(f"could not dead-letter {_where(r)} to {self.config.dead_letter_topic}: "
                                 f"{exc}; the state is unchanged from the last good batch") from exc
        self.stats.dead_lettered += len(items)

    def _commit_kafka(self, consumer: KafkaConsumer, next_offsets: dict[tuple[str, int], int]) -> None:
        self._last_commit = time.monotonic()
        try:
            consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                             for (t, p), o in next_offsets.items()})
        except FencedInstanceIdError:
            raise  # another process took this one's group instance id: see run()
        except KafkaError as exc:  # the state store holds the truth; this is for lag tools
            log.warning("Kafka offset commit failed (state is committed): %s", exc)

    def _confirm_membership(self, consumer: KafkaConsumer) -> None:
        """A static member replaced by another process with the same group instance id learns it
        from its next commit only (kafka-python's heartbeat thread stops without a word), and
        meanwhile it would go on reading: so an idle static member commits its positions every
        MEMBERSHIP_CHECK_S (Kafka's committed offsets are for lag tools; the store holds the truth)."""
        if not self.config.group_instance_id or time.monotonic() - self._last_commit < MEMBERSHIP_CHECK_S:
            return
        positions = {}
        for tp in consumer.assignment():
            try:
                positions[(tp.topic, tp.partition)] = consumer.position(tp, timeout_ms=5000)
            except KafkaError:
                continue
        positions = {k: o for k, o in positions.items() if o is not None}
        if positions:
            self._commit_kafka(consumer, positions)
        else:
            self._last_commit = time.monotonic()

    # -- snapshots and readiness ----------------------------------------------------------
    def _snapshot_progress(self, consumer: KafkaConsumer, events: list[ChangeEvent]
                           ) -> dict[str, SnapshotState]:
        def end_offsets(topic: str) -> dict[int, int]:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            return {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}

        if not any(e.snapshot in MARKERS for e in events):
            return {}
        return snapshot_transitions(events, self.store.snapshot_states(), end_offsets)

    def _complete_snapshots(self) -> None:
        """Read the snapshot states (once per loop turn: readiness and metrics use this copy),
        and mark pending snapshots complete once every partition reached its target."""
        states = self.store.snapshot_states()
        if any(s.state == SNAPSHOT_PENDING for s in states.values()):
            stored = self.store.stored_offsets()
            for topic, snap in states.items():
                if snap.state == SNAPSHOT_PENDING and all(
                    stored.get((topic, p), 0) >= end for p, end in snap.targets.items()
                ):
                    self.store.mark_snapshot_complete(topic)
                    log.info("snapshot of %s completely applied", topic)
            states = self.store.snapshot_states()
        self._snapshots = states

    def _complete_cold_start(self, topics: list[str]) -> list[str]:
        """A cold start (no stored offsets) that replayed a topic to the end offsets of its start,
        without meeting any snapshot marker but meeting streamed changes, holds a complete copy:
        Debezium streams only after its initial snapshot, and compaction removed the markers
        because later changes replaced their keys. A topic with only snapshot rows so far (a
        snapshot in progress, whose `first` may sit in a partition not visible yet) or a `first`
        marker waits for its `last`. Returns the topics still undecided."""
        undecided = []
        for topic in topics:
            if topic in self._snapshots:
                continue  # markers seen: the normal path decides
            if topic in self._streamed:
                self.store.mark_snapshot_complete(topic)
                log.info("%s replayed from its beginning: no snapshot markers (compacted away) and "
                         "streamed changes after them, so the copy is complete", topic)
            else:
                undecided.append(topic)
        self._snapshots = self.store.snapshot_states()
        return undecided

    @property
    def snapshots(self) -> dict[str, SnapshotState]:
        """Each topic's snapshot state, as of the loop's latest turn."""
        return self._snapshots

    def snapshot_applied(self) -> bool:
        """True once the snapshot of every subscribed topic has been completely applied (as of
        the consumer loop's latest turn; cheap enough for every /readyz request)."""
        states = self._snapshots
        return all(t in states and states[t].state == SNAPSHOT_COMPLETE for t in self.topics)

    def ready(self) -> bool:
        """Readiness by policy: `snapshot` (default), `caught-up` (end offsets at start reached
        once) or `always` (serve a partial copy); never while the state store is unavailable."""
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why /readyz answers 503, or None when ready."""
        if not self.health.up:
            return "state store unavailable"
        policy = self.config.readiness
        if policy == "always":
            return None
        if policy == "caught-up":
            return None if self._caught_up_once else "end offsets of start-up not reached yet"
        return None if self.snapshot_applied() else "snapshot not applied"

    def healthy(self, stall_s: float = 120.0) -> bool:
        """Liveness: the loop turned within `stall_s` (it also turns while it waits for an
        unavailable state store: restarting the process would not bring the store back)."""
        return time.monotonic() - self.last_loop < stall_s

    def _caught_up(self, consumer: KafkaConsumer, targets: dict[TopicPartition, int],
                   beginnings: dict[TopicPartition, int]) -> bool:
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

    def _observe(self, consumer: KafkaConsumer) -> None:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = consumer.position(tp, timeout_ms=1000)
            except KafkaError:
                continue
            self.metrics.set("ecst_partition_lag", max(0, high - position), topic=tp.topic,
                             partition=str(tp.partition))
        states = self._snapshots
        for t in self.topics:
            self.metrics.set("ecst_snapshot_complete",
                             1.0 if t in states and states[t].state == SNAPSHOT_COMPLETE else 0.0,
                             topic=t)
        self.metrics.set("ecst_ready", 1.0 if self.ready() else 0.0)
        if time.monotonic() - self._rebuild_checked >= REBUILD_CHECK_S:
            self._rebuild_checked = time.monotonic()
            self.observe_rebuild()
            self._check_topics(consumer)

    def _check_topics(self, consumer: KafkaConsumer) -> None:
        """`ecst_topic_present`, and a warning when a subscribed topic disappears (deleted: its
        connector cannot deliver changes any more) or comes back."""
        for topic in self.topics:
            present = bool(consumer.partitions_for_topic(topic))
            self.metrics.set("ecst_topic_present", 1.0 if present else 0.0, topic=topic)
            if present != self._topics_present.get(topic, True):
                if present:
                    log.warning("topic %s exists again: a topic that was deleted and re-created lost "
                                "what it held; check with `ecst verify`", topic)
                else:
                    log.warning("topic %s no longer exists (deleted?): the state keeps what was applied, "
                                "and nothing new arrives; docs/runbook.md, 'Change topic deleted', rebuilds "
                                "it with `ecst rebootstrap fresh`", topic)
            self._topics_present[topic] = present

    def observe_rebuild(self) -> None:
        """Export the progress of a rebuild of this state (run by `ecst rebootstrap` in another
        process, which records it in the shadow's bookkeeping) as gauges."""
        doc = self.store.rebuild_in_progress() if not self.store.ns else None
        for mode in ("replay", "incremental", "blocking", "fresh"):
            running = doc is not None and doc.get("mode") == mode
            self.metrics.set("ecst_rebuild_in_progress", 1.0 if running else 0.0, mode=mode)
        self.metrics.set("ecst_rebuild_rows_applied", float(doc["rows_applied"]) if doc else 0.0)
        self.metrics.set("ecst_rebuild_rows_expected", float(doc["rows_expected"]) if doc else 0.0)
        self.metrics.set("ecst_rebuild_rows_per_second", float(doc.get("rate", 0.0)) if doc else 0.0)

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self._last_purge < PURGE_EVERY_S:
            return
        self._last_purge = now
        cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(
            hours=self.config.tombstone_retention_hours)
        purged = self.store.purge_tombstones(cutoff)
        if purged:
            log.info("purged %d delete tombstones older than %s", purged, cutoff)


def _where(r: Record) -> str:
    return f"{r.topic}[{r.partition}]@{r.offset}"


def _next_offsets(items: list[_Decoded]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for d in items:
        key = (d.record.topic, d.record.partition)
        out[key] = max(out.get(key, 0), d.record.offset + 1)
    return out


def _fmt(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(offsets.items()))

"""The consumer loop, as an orchestrator: poll a batch, decode and map it, apply it in one
transaction, then bookkeeping (snapshots, readiness, gauges). Each stage lives in its own
module: `group` (Kafka), `decoding` (decode and map), `store` (the guarded apply), `deadletter`,
`readiness` (pure decisions), `chores` (gauges, purge).

Offsets live in the state store. On every partition assignment the consumer seeks to the
offsets stored there (the beginning of the topic if none), so a crash between the state commit
and the Kafka commit loses nothing and applies nothing twice in effect. Kafka offsets are
committed too, after the state, only so that lag tools see progress.

With `overlap` (the default for a PostgreSQL state) the stages overlap: while one worker thread
applies batch N (waiting for the database releases the GIL), the loop polls and decodes batch N+1. At
most one batch is in flight, and kafka-python is only ever called from the loop's thread (and its
own IO thread, for the rebalance listener). Before batch N+1 is handed over, the loop waits for
N and handles its outcome exactly as the serial loop does: the Kafka commit of N's offsets
(after N's state commit), dead-letter counts, readiness and snapshot bookkeeping over the state N
left. When N failed (the store went away, a rebuild was swapped in, a rejected batch with
`fail_fast`), the polled batch N+1 is dropped unapplied and the loop re-positions at the offsets
the store holds, as the serial loop does. A rebalance waits for the batch in flight before the
partitions are given up or positioned, and the run's end waits for it too.

A record that cannot be decoded, or that the database rejects, goes to the dead-letter topic
before the offsets that pass it are committed; with `fail_fast`, or without a dead-letter topic,
the consumer stops instead and the state stays at the last good batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import FencedInstanceIdError, KafkaError
from sqlalchemy.exc import SQLAlchemyError

from ecst import kafka
from ecst.consumer import readiness, topicwait
from ecst.consumer.chores import Chores
from ecst.consumer.config import ConsumerConfig, check_config
from ecst.consumer.deadletter import DeadLetters, where
from ecst.consumer.decoding import Decoded, Decoder, check_mappings
from ecst.consumer.events import ChangeEvent
from ecst.consumer.group import Offsets
from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import StoreHealth, wait_for_store
from ecst.consumer.readers import Reader, open_reader
from ecst.consumer.snapshots import (
    LAST_MARKERS,
    MARKERS,
    SNAPSHOT_PENDING,
    SnapshotState,
    snapshot_transitions,
)
from ecst.consumer.store import StaleStateError, StateStore
from ecst.consumer.writes import ApplyStats
from ecst.exceptions import (
    ConfigError,
    DeferredDecodeError,
    EventError,
    StateStoreError,
    StateStoreUnavailableError,
)

log = logging.getLogger(__name__)
INFLIGHT_POLL_MS = 50  # the longest a poll waits for records while a batch is being applied
# Kafka offsets are committed for lag tools only (the state's offsets rule), so at most this often (and
# once more when the run ends): a commit per batch cost the loop a broker round trip before the next
# batch could be handed over, 50 times a second at 1,000 changes/s (docs/benchmark-notes.md).
KAFKA_COMMIT_EVERY_S = 1.0
# The snapshot states are read again at each turn while a snapshot is pending or after a batch that
# held snapshot markers; otherwise at most this often, which is how soon a change made by another
# process (a consumer of other partitions, a rebuild swapped in) shows in readiness.
SNAPSHOT_READ_EVERY_S = 1.0

# A snapshot's `last` record can reach its partition before records Debezium sent earlier reach
# theirs: Kafka orders records within a partition only, and the worker's producer delivers each
# partition's batches on their own. CI saw a bootstrap declared ready while the last 2 of its 1,000
# rows, sent in the same millisecond as `last` but to another partition, were not in Kafka yet (read
# from the broker's log files). So the end offsets that a batch holding a `last` marker takes as the
# snapshot's target are read once SNAPSHOT_SETTLE_S have passed since `last` was sent (its Kafka
# timestamp; after the batch was polled when it has none): time for the producer to deliver what it
# was given before `last` (a bound, not a proof). A `last` read long after it was sent (a consumer
# started after the snapshot, a replay) does not wait.
SNAPSHOT_SETTLE_S = 2.0


def settle_wait_s(sent_ms: list[int | None], now_s: float) -> float:
    """How long to wait before reading a snapshot's target, given the Kafka timestamps (ms) of the
    `last` records of a batch: what is left of SNAPSHOT_SETTLE_S since the latest was sent, all of
    it when one has no timestamp. Never more than SNAPSHOT_SETTLE_S, whatever the clocks say."""
    if not sent_ms or any(t is None for t in sent_ms):
        return SNAPSHOT_SETTLE_S
    latest = max(t for t in sent_ms if t is not None) / 1000
    return min(SNAPSHOT_SETTLE_S, max(0.0, latest + SNAPSHOT_SETTLE_S - now_s))


def _let_earlier_records_land(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


@dataclass
class RebuildPolicy:
    """How a rebuild's consumer differs from the live one (which keeps the defaults)."""

    accept: Callable[[ChangeEvent], bool] | None = None  # a filtered backfill's row filter
    cold_start_completes: bool = True  # a replay from the beginning completes the copy
    until: Callable[[], bool] | None = None  # asked once per loop turn: the run ends when True
    # A rebuild reads alone, its offsets in its shadow: it assigns itself every partition instead of
    # joining a group (no rebalance can stall it: see JOIN_STUCK_S in ecst/consumer/group.py).
    reads_alone: bool = False


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
    missing: list[str] = field(default_factory=list)  # topics still missing when the run was stopped

    def count(self, items: list[Decoded], stats: ApplyStats, ignored: int, metrics: Metrics) -> None:
        self.batches += 1
        self.records += len(items)
        for d in items:
            self.by_topic[d.record.topic] = self.by_topic.get(d.record.topic, 0) + 1
        self.ignored += ignored
        self.apply.merge(stats)
        metrics.inc("ecst_batches_total")
        metrics.inc("ecst_records_ignored_total", ignored)
        metrics.inc("ecst_events_stale_total", stats.stale)
        for (op, table), n in stats.by_table_op.items():
            metrics.inc("ecst_events_applied_total", n, op=op, table=table)


@dataclass
class Batch:
    """One polled batch, decoded, with what the loop's thread read for it from Kafka (the worker
    thread that applies it never calls kafka-python)."""

    items: list[Decoded]
    offsets: Offsets  # the next offset of each partition once the batch is applied
    positions: Offsets  # each assigned partition's position right after the poll that read it
    ends: dict[str, dict[int, int]]  # end offsets of the topics whose snapshot markers it holds


@dataclass
class InFlight:
    """The batch being applied (at most one) and the outcome of its apply."""

    batch: Batch
    outcome: Future[tuple[ApplyStats, float]]  # the apply's stats and how long it took (s)


class Consumer:
    """Applies Debezium change topics to a `StateStore`."""

    def __init__(
        self,
        store: StateStore,
        topics: list[str] | None = None,
        *,
        bootstrap_servers: kafka.KafkaSettings | str,
        group_id: str | None = None,
        batch_size: int | None = None,
        config: ConsumerConfig | None = None,
        poll_timeout_ms: int = 500,
        metrics: Metrics | None = None,
        client_id: str = "ecst-consumer",
        policy: RebuildPolicy | None = None,
        mappings_checked: bool = False,
        health: StoreHealth | None = None,
        overlap: bool | None = None,
        kafka_options: dict[str, Any] | None = None,
    ) -> None:
        config = config or ConsumerConfig()
        if topics:
            config = config.with_(topics=tuple(config.mapping(t) for t in topics))
        self.config = check_config(config.with_(group_id=group_id, batch_size=batch_size))
        self.store = store
        self.topics = [m.topic for m in self.config.topics]
        self.kafka = kafka.as_settings(bootstrap_servers, self.config.kafka_client,
                                       self.config.kafka_security)
        kafka.require_client(self.kafka)  # a client chosen but not installed: say so now
        self.poll_timeout_ms = poll_timeout_ms
        self.client_id = client_id
        self.metrics = metrics or Metrics()
        self.health = health or StoreHealth(self.metrics)  # is the state store answering?
        self.policy = policy or RebuildPolicy()
        self.mappings_checked = mappings_checked  # `check_mappings` ran already (before the store)
        self.decoder = Decoder(self.config, self.policy.accept,
                               store.deferral if self.config.decode_in_database else None)
        self.dead_letters = DeadLetters(self.kafka, self.config.dead_letter_topic, self.metrics, client_id)
        self.stats = RunStats()
        self.last_loop = time.monotonic()
        self.snapshots: dict[str, SnapshotState] = {}  # each topic's, as of the loop's latest turn
        self._caught_up_once = False
        self._streamed: set[str] = set()  # topics where a streamed (non-snapshot) change was read
        self._cold: list[str] = []  # topics started without stored offsets, not decided yet
        self._missing: list[str] = []  # topics that did not exist at the latest look (at start)
        self.chores = Chores(store, self.metrics, self.topics, self.config.tombstone_retention_hours)
        # Poll and decode the next batch while this one is applied (see the module's docstring). By
        # default only for PostgreSQL: its apply waits for the server, while SQLite's executemany takes
        # and releases the GIL for every row, so overlapped it crawls while the loop decodes (measured:
        # docs/benchmarks.md).
        overlap = self.config.overlap if overlap is None else overlap
        self.overlap = store.dialect == "postgresql" if overlap is None else overlap
        self.kafka_options = kafka_options  # kafka-python consumer options over group.FETCH_OPTIONS
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: InFlight | None = None
        self._settled = threading.Condition()  # notified when an apply in flight ends
        # kafka-python runs the rebalance listener on its own IO thread, and a poll of the loop may
        # return while a rebalance is under way: the gate orders "a rebalance begins" against "a
        # batch is handed to the worker", so that either the listener waits for that batch or the
        # loop drops it.
        self._gate = threading.Lock()
        self._rebalances = 0  # rebalance callbacks begun
        self._to_commit: Offsets = {}  # settled offsets not committed to Kafka yet ...
        self._to_commit_seen = 0  # ... since rebalance callback number this
        self._committed_at = float("-inf")
        self._snapshots_read_at = float("-inf")
        self._rebalancing = False  # between a revocation and the end of the next assignment

    # -- the loop -------------------------------------------------------------------------
    def run(self, *, until_caught_up: bool = False, until_ready: bool = False,
            stop: threading.Event | None = None, topic_timeout_s: float | None = 120.0,
            on_batch: Callable[[ApplyStats], None] | None = None) -> RunStats:
        """Consume until `stop` is set, or (with `until_caught_up`) until every partition's
        applied offset reaches the end offset the topic had when the run started, or (with
        `until_ready`) until every topic's snapshot has been completely applied, or until the
        policy's `until()` returns True.

        Topics that do not exist yet are waited for (`topicwait`, /readyz saying so) for
        `topic_timeout_s`, then a StackError; None waits until `stop` (a service)."""
        stop = stop or threading.Event()
        group = open_reader(self.kafka, self.config, self.store, self.health, client_id=self.client_id,
                            poll_timeout_ms=self.poll_timeout_ms, alive=self._alive,
                            before_rebalance=self._wait_for_apply, after_assignment=self._assigned,
                            kafka_options=self.kafka_options)
        self.metrics.set("ecst_kafka_up", 1.0)
        if self.overlap:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecst-apply")
        try:
            partitions = topicwait.wait_for_topics(
                group.find_topics, stop=stop, idle=lambda seconds: self._idle(seconds, stop),
                timeout_s=topic_timeout_s, on_missing=self._topics_missing)
            if partitions is None:
                self.stats.missing = list(self._missing)
                return self.stats  # stopped while a topic was missing
            if not self.mappings_checked:
                check_mappings(self.config, self.kafka)
            beginnings, targets = group.offsets_at_start(partitions)
            log.info("end offsets at start: %s", _fmt(targets))
            self.stats.empty_at_start = readiness.empty_at_start(self.topics, beginnings, targets)
            stored = wait_for_store(self.store.stored_offsets, self.health, stop,
                                    lambda seconds: self._idle(seconds, stop))
            if stored is None:
                return self.stats  # stopped while the store was away
            self._cold = readiness.cold_topics(self.topics, stored, enabled=self.policy.cold_start_completes)
            if self.policy.reads_alone:
                group.assign(partitions, stored)
            else:
                group.subscribe()
            while not stop.is_set():
                self._alive()
                try:
                    if self._turn(group, targets, beginnings, until_caught_up, until_ready, on_batch):
                        break
                except StateStoreUnavailableError as exc:
                    self.health.lost(exc)
                    self._wait_out_outage(group, stop)
                except KafkaError as exc:
                    if not exc.retriable:
                        raise
                    self._wait_out_kafka(group, stop, exc)
            self._settle(group, on_batch)  # stopped: the batch in flight is finished first
        except FencedInstanceIdError as exc:
            raise ConfigError(
                f"another consumer joined group {self.config.group_id!r} with this one's group instance "
                f"id {self.config.group_instance_id!r}, so Kafka fenced this one: give each process its own "
                "(--group-instance-id, kafka.group_instance_id or ECST_GROUP_INSTANCE_ID)") from exc
        finally:
            self._drain(group)
            self._flush_kafka_commit(group)
            group.close()
            self.dead_letters.close()
        return self.stats

    def _turn(self, group: Reader, targets: Offsets, beginnings: Offsets, until_caught_up: bool,
              until_ready: bool, on_batch: Callable[[ApplyStats], None] | None) -> bool:
        """One turn of the loop: poll (and decode) a batch, finish the batch in flight, bookkeeping
        over the state it left, then apply the new batch (serial: before the bookkeeping;
        `overlap`: hand it to the worker thread). True when the run is done."""
        with self._gate:
            seen = self._rebalances
        try:
            # With a batch in flight the poll waits briefly: when nothing new comes, that batch is
            # finished (Kafka commit, readiness) without waiting for the whole poll timeout.
            messages = group.poll(INFLIGHT_POLL_MS if self._inflight is not None else None)
            if not self.health.up:  # the store went away during a rebalance (the listener saw it)
                raise StateStoreUnavailableError(self.health.error)
            batch = self._prepare(group, messages) if messages else None
        except BaseException:
            self._settle(group, on_batch)  # an error of the batch in flight is raised instead
            raise
        if batch is not None and not self.overlap:
            self._hand_over(group, batch, seen)  # applied now, on this thread
        try:
            settled = self._settle(group, on_batch)
        except StaleStateError:  # a rebuild was swapped in: its offsets rule now
            log.warning("the state was replaced by a rebuild: re-reading its offsets")
            self.store.refresh()
            self._snapshots_read_at = float("-inf")  # the rebuild's snapshot states, at this turn
            group.reposition()  # the batch polled meanwhile (if any) is read again
            return False
        if self.overlap and batch is not None and settled is None:
            # Nothing was applied since the last turn's bookkeeping, which still holds: hand the
            # batch over at once (on a quiet stream, a change waits for no bookkeeping).
            self._hand_over(group, batch, seen)
            return False
        self._complete_snapshots(changed=settled is not None and bool(settled.ends))
        # Once caught up, only a run that ends there or a cold start still to decide needs to know.
        caught_up = (self._caught_up_once and not (until_caught_up or self._cold)) or self._caught_up(
            group, batch, settled, targets, beginnings)
        self._caught_up_once = self._caught_up_once or caught_up
        if caught_up and self._cold:
            self._complete_cold_start()
        self.chores.after_turn(group, self.snapshots, self.ready())
        self._commit_to_kafka(group, {})  # offsets held back, once due: also when the stream went quiet
        if batch is None:  # nothing read ahead of the state: positions may be committed
            group.confirm_membership()
        until = self.policy.until
        if ((until_caught_up and caught_up) or (until_ready and self.snapshot_applied())
                or (until is not None and until())):
            return True  # a batch read meanwhile is dropped: the stored offsets rule
        if batch is not None and self.overlap:
            self._hand_over(group, batch, seen)
        return False

    def _caught_up(self, group: Reader, polled: Batch | None, settled: Batch | None, targets: Offsets,
                   beginnings: Offsets) -> bool:
        """Whether the stored offsets reached the end offsets the topics had at the start. Progress
        counts the positions as they were once the batch just applied was read (a partition's
        position passes what only Kafka holds, such as transaction markers); a batch `polled` but
        not applied yet does not count."""
        if polled is None:
            positions = group.positions()
        else:
            positions = settled.positions if settled is not None else {}
        return readiness.caught_up(targets, beginnings, progress(self.store.stored_offsets(), positions))

    def _hand_over(self, group: Reader, batch: Batch, seen: int) -> None:
        """Submit `batch`, unless a rebalance began since the poll that read it (`seen` counts the
        listener's calls before that poll): then it is dropped and read again from the stored
        offsets, since the assignment may have positioned the partitions behind it."""
        with self._gate:
            moved = self._rebalances != seen or self._rebalancing
            if not moved:
                self._submit(batch)
        if moved:
            log.info("a rebalance came while a batch was read: reading it again from the stored offsets")
            if not self._rebalancing:  # else the assignment to come positions every partition
                group.reposition()

    # -- the batch in flight --------------------------------------------------------------
    def _prepare(self, group: Reader, messages: list) -> Batch:
        """Decode a polled batch, and read from Kafka what its apply needs (on the loop's thread)."""
        items = [self.decoder(m) for m in messages]
        topics = sorted({d.event.topic for d in items if d.event is not None and d.event.snapshot in MARKERS})
        lasts = [d.record.timestamp for d in items
                 if d.event is not None and d.event.snapshot in LAST_MARKERS]
        if lasts:
            _let_earlier_records_land(settle_wait_s(lasts, time.time()))
        ends = {t: group.end_offsets(t) for t in topics}
        return Batch(items, _next_offsets(items), group.positions(), ends)

    def _submit(self, batch: Batch) -> None:
        """Apply `batch`: on the worker thread with `overlap` (at most one batch in flight),
        else here and now. `_settle` takes its outcome."""
        assert self._inflight is None, "one batch in flight at most"
        if self._pool is None:
            outcome: Future[tuple[ApplyStats, float]] = Future()
            try:
                outcome.set_result(self._timed_apply(batch))
            except BaseException as exc:
                outcome.set_exception(exc)
        else:
            outcome = self._pool.submit(self._timed_apply, batch)
            outcome.add_done_callback(self._notify)
        self._inflight = InFlight(batch, outcome)

    def _timed_apply(self, batch: Batch) -> tuple[ApplyStats, float]:
        started = time.monotonic()
        return self._apply(batch), time.monotonic() - started

    def _notify(self, _outcome: Future[tuple[ApplyStats, float]]) -> None:
        with self._settled:
            self._settled.notify_all()

    def _wait_for_apply(self) -> None:
        """Block until the batch in flight (if any) is applied or failed, without taking its
        outcome: a rebalance calls this (on kafka-python's thread, inside the loop's poll) before
        partitions are given up or positioned at the offsets the store holds."""
        with self._gate:
            self._rebalances += 1
            self._rebalancing = True
            inflight = self._inflight
        if inflight is None or inflight.outcome.done():
            return
        log.info("rebalance: waiting for the batch being applied")
        with self._settled:
            self._settled.wait_for(inflight.outcome.done)

    def _assigned(self) -> None:
        """The listener positioned the assigned partitions: the rebalance is over."""
        with self._gate:
            self._rebalances += 1
            self._rebalancing = False

    def _settle(self, group: Reader,
                on_batch: Callable[[ApplyStats], None] | None) -> Batch | None:
        """Wait for the batch in flight and finish it: once its state is committed, commit its
        offsets to Kafka (for lag tools), count it, call `on_batch`. Its error is raised here,
        on the loop's thread (the state is unchanged by it). Returns the batch, or None."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return None
        stats, took = inflight.outcome.result()  # raises the apply's error
        batch = inflight.batch
        self.metrics.observe_batch(took)
        self._commit_to_kafka(group, batch.offsets)
        items = batch.items
        bad = sum(1 for d in items if d.error)
        ignored = sum(1 for d in items if d.event is None and not d.error)
        self.stats.dead_lettered += bad
        self.stats.count(items, stats, ignored, self.metrics)
        newest = max((d.event.ts_ms for d in items if d.event and d.event.ts_ms), default=None)
        if newest:
            self.metrics.set("ecst_replication_delay_seconds", max(0.0, time.time() - newest / 1000))
        log_batch(items, stats, batch.offsets, ignored, bad, took)
        if on_batch is not None:
            on_batch(stats)
        return batch

    def _commit_to_kafka(self, group: Reader, offsets: Offsets, *, now: bool = False) -> None:
        """Commit the offsets of settled batches to Kafka (after their state commit), at most every
        KAFKA_COMMIT_EVERY_S, or `now`. Offsets held back across a rebalance are dropped: their
        partitions may have a new owner, which commits its own."""
        with self._gate:
            seen = self._rebalances
        if seen != self._to_commit_seen:
            self._to_commit, self._to_commit_seen = {}, seen
        self._to_commit.update(offsets)
        if self._to_commit and (now or time.monotonic() - self._committed_at >= KAFKA_COMMIT_EVERY_S):
            pending, self._to_commit = self._to_commit, {}
            self._committed_at = time.monotonic()
            group.commit(pending)

    def _flush_kafka_commit(self, group: Reader) -> None:
        """At the run's end: commit what is held back, so that lag tools see the final offsets."""
        if not self._to_commit:
            return
        try:
            self._commit_to_kafka(group, {}, now=True)
        except Exception as exc:  # noqa: BLE001 - the state holds the offsets; another error may be on its way out
            log.warning("the final Kafka offset commit failed (the state holds the offsets): %s", exc)

    def _drain(self, group: Reader) -> None:
        """At the run's end: a batch still in flight (an error left the loop) is waited for and,
        if it was applied, finished; its own error is only logged. Then the worker stops."""
        if self._inflight is not None:
            try:
                self._settle(group, None)
            except Exception as exc:  # noqa: BLE001 - another error is on its way out already
                log.warning("the batch in flight at the end of the run was not applied: %s", exc)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- applying a batch -----------------------------------------------------------------
    def _apply(self, batch: Batch) -> ApplyStats:
        """Apply one batch with its offsets in one transaction (dead-lettering first what must be);
        on the worker thread with `overlap`. It calls no kafka-python consumer method."""
        items = batch.items
        bad = [d for d in items if d.error]
        if bad and self._stop_on_error():
            raise EventError(f"{where(bad[0].record)}: {bad[0].error}; the state is unchanged from the "
                             "last good batch")
        good = [d for d in items if not d.error]
        try:
            if bad:
                self.dead_letters.send([(d.record, d.error or "") for d in bad], stage="decode")
            return self._apply_items(batch, batch.offsets, good)
        except StateStoreError:
            raise  # the database itself is unavailable or unusable: nothing to dead-letter
        except DeferredDecodeError as exc:  # a row left to the database, decoded in Python after all
            if self._stop_on_error():
                raise EventError(f"{exc}; the state is unchanged from the last good batch") from exc
            log.warning("batch rejected: %s: applying record by record", exc)
            return self._apply_one_by_one(batch)
        except (SQLAlchemyError, OverflowError) as exc:  # SQLite's driver: an integer beyond 64 bits
            if self._stop_on_error():
                raise EventError(f"batch rejected by the state store: {exc}; the state is "
                                 "unchanged from the last good batch") from exc
            log.warning("batch rejected by the state store (%s): applying record by record", exc)
            return self._apply_one_by_one(batch)

    def _apply_items(self, batch: Batch, offsets: Offsets, good: list[Decoded]) -> ApplyStats:
        events = [d.event for d in good if d.event is not None]
        self._streamed.update(e.topic for e in events if e.snapshot is None)
        snapshots: dict[str, SnapshotState] = {}
        if any(e.snapshot in MARKERS for e in events):
            snapshots = snapshot_transitions(events, self.store.snapshot_states(), batch.ends.__getitem__)
        # An outage raises StateStoreUnavailableError: the loop waits it out and reads this batch
        # again; any other database error rejects the batch.
        return self.store.apply(events, offsets, snapshots)

    def _apply_one_by_one(self, batch: Batch) -> ApplyStats:
        """Slow path after a rejected batch: each record alone; the rejected ones are
        dead-lettered before the offset that passes them is stored (`_settle` counts them)."""
        total = ApplyStats()
        for d in batch.items:
            offsets = _next_offsets([d])
            if d.error or d.event is None:
                self.store.apply([], offsets)  # already dead-lettered, or no change
                continue
            try:
                total.merge(self._apply_items(batch, offsets, [d]))
            except DeferredDecodeError as exc:  # what decoding it would have said, at decode
                d.error = exc.reason
                self.dead_letters.send([(d.record, d.error)], stage="decode")
                self.store.apply([], offsets)
            except (SQLAlchemyError, OverflowError) as exc:
                d.error = f"rejected by the state store: {getattr(exc, 'orig', None) or exc}"
                self.dead_letters.send([(d.record, d.error)], stage="apply")
                self.store.apply([], offsets)
        return total

    def _stop_on_error(self) -> bool:
        return self.config.fail_fast or not self.config.dead_letter_topic

    # -- waiting out outages --------------------------------------------------------------
    def _wait_out_outage(self, group: Reader, stop: threading.Event) -> None:
        """Wait for the state store with every partition paused (the member keeps its place in
        the group), then position every partition at the offsets the store holds and resume.
        The batch that failed wrote nothing, so it is read again."""
        self.metrics.set("ecst_ready", 0.0)
        stored = wait_for_store(self.store.stored_offsets, self.health, stop,
                                lambda seconds: group.idle_paused(seconds, stop))
        if stored is not None:
            group.resume(stored)

    def _wait_out_kafka(self, group: Reader, stop: threading.Event, exc: KafkaError) -> None:
        """Kafka is unreachable (a broker restarting, a network cut): wait for it with capped
        backoff, then read on from the offsets the state holds. The copy keeps serving meanwhile."""
        self.metrics.set("ecst_kafka_up", 0.0)
        log.warning("Kafka is unreachable (%s): waiting for it; the state keeps what was applied", exc)
        started = time.monotonic()
        if group.wait_for_kafka(stop, lambda seconds: self._idle(seconds, stop)):
            self.metrics.set("ecst_kafka_up", 1.0)
            log.warning("Kafka reachable again after %.0f s: reading on from the state's offsets",
                        time.monotonic() - started)

    def _topics_missing(self, missing: list[str]) -> None:
        """At start, after each look for the topics: /readyz and ecst_topic_present tell which are missing."""
        self._missing = list(missing)
        for topic in self.topics:
            self.metrics.set("ecst_topic_present", 0.0 if topic in missing else 1.0, topic=topic)

    def _alive(self) -> None:
        self.last_loop = time.monotonic()

    def _idle(self, seconds: float, stop: threading.Event) -> None:
        """Wait while the loop counts as alive for /healthz."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            self._alive()
            stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))

    # -- snapshots and readiness ----------------------------------------------------------
    def _complete_snapshots(self, changed: bool) -> None:
        """Read the snapshot states (readiness and metrics use this copy), and mark pending
        snapshots complete once every partition reached its target. Read at the first turn (also
        after a crash between the two commits), at each turn while one is pending or after a batch
        that `changed` them (it held snapshot markers), else every SNAPSHOT_READ_EVERY_S."""
        now = time.monotonic()
        pending = any(s.state == SNAPSHOT_PENDING for s in self.snapshots.values())
        if not (changed or pending or now - self._snapshots_read_at >= SNAPSHOT_READ_EVERY_S):
            return
        self._snapshots_read_at = now
        states = self.store.snapshot_states()
        done = readiness.snapshots_done(states, self.store.stored_offsets()) if any(
            s.state == SNAPSHOT_PENDING for s in states.values()) else []
        for topic in done:
            self.store.mark_snapshot_complete(topic)
            log.info("snapshot of %s completely applied", topic)
        self.snapshots = self.store.snapshot_states() if done else states

    def _complete_cold_start(self) -> None:
        complete, self._cold = readiness.cold_start_outcome(self._cold, self.snapshots, self._streamed)
        for topic in complete:
            self.store.mark_snapshot_complete(topic)
            log.info("%s replayed from its beginning: no snapshot markers (compacted away) and "
                     "streamed changes after them, so the copy is complete", topic)
        self.snapshots = self.store.snapshot_states()

    def snapshot_applied(self) -> bool:
        """True once the snapshot of every subscribed topic has been completely applied (as of
        the consumer loop's latest turn; cheap enough for every /readyz request)."""
        return readiness.snapshot_applied(self.topics, self.snapshots)

    def ready(self) -> bool:
        """Readiness by policy: `snapshot` (default), `caught-up` (end offsets at start reached
        once) or `always` (serve a partial copy); never while the state store is unavailable."""
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why /readyz answers 503, or None when ready."""
        return readiness.not_ready_reason(self.config.readiness, store_up=self.health.up,
                                          caught_up_once=self._caught_up_once, topics=self.topics,
                                          snapshots=self.snapshots, missing=self._missing)

    def healthy(self, stall_s: float = 120.0) -> bool:
        """Liveness: the loop turned within `stall_s` (it also turns while it waits for an
        unavailable state store: restarting the process would not bring the store back)."""
        return time.monotonic() - self.last_loop < stall_s

    def observe_rebuild(self) -> None:
        """Export the progress of a rebuild of this state as gauges (see `Chores`)."""
        self.chores.observe_rebuild()


def log_batch(items: list[Decoded], stats: ApplyStats, offsets: Offsets, ignored: int, bad: int,
              took: float) -> None:
    """The INFO line of one applied batch: what it did, the next offset of each partition it moved,
    and how long its apply took; the same as structured fields (in a JSON log line)."""
    ops = dict(sorted(stats.by_op.items()))
    deletes = ops.get("d", 0)
    upserts = sum(n for op, n in ops.items() if op in ("c", "u", "r"))
    next_offsets = {f"{t}[{p}]": o for (t, p), o in sorted(offsets.items())}
    log.info("applied batch: %d records, %d upserts, %d deletes, %d stale, %d ignored, %d dead-lettered; "
             "next offsets %s; %.0f ms", len(items), upserts, deletes, stats.stale, ignored, bad,
             " ".join(f"{k}={o}" for k, o in next_offsets.items()) or "-", took * 1000,
             extra={"records": len(items), "upserts": upserts, "deletes": deletes, "stale": stats.stale,
                    "ignored": ignored, "dead_lettered": bad, "ops": ops, "offsets": next_offsets,
                    "ms": round(took * 1000, 1)})


def progress(stored: Offsets, positions: Offsets) -> Offsets:
    """Per partition, the larger of its stored offset and its position."""
    out = dict(stored)
    for key, position in positions.items():
        out[key] = max(out.get(key, 0), position)
    return out


def _next_offsets(items: list[Decoded]) -> Offsets:
    out: Offsets = {}
    for d in items:
        key = (d.record.topic, d.record.partition)
        out[key] = max(out.get(key, 0), d.record.offset + 1)
    return out


def _fmt(offsets: Offsets) -> str:
    return ", ".join(f"{t}[{p}]={o}" for (t, p), o in sorted(offsets.items()))

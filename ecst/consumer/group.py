"""The consumer's side of Kafka: joining the group, positioning every assigned partition at the
offsets the state store holds, polling, waiting out a broker outage, and committing offsets to
Kafka for lag tools (the state store holds the truth)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import FencedInstanceIdError, KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from ecst import kafka
from ecst.consumer.config import ConsumerConfig
from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import Backoff, StoreHealth
from ecst.consumer.store import StateStore
from ecst.exceptions import StateStoreUnavailableError

log = logging.getLogger(__name__)
Offsets = dict[tuple[str, int], int]  # (topic, partition) -> offset
MEMBERSHIP_CHECK_S = 10.0  # an idle static member commits this often, to learn it was fenced
# kafka-python 3.0.12 can leave a join of the group unfinished for good: when the leader re-joins
# because the metadata changed (its assignment snapshot differs: a topic's partitions, or the leader's
# second join right after its first), nothing pins its "rejoin needed" flag; the leader's assignment
# makes the snapshots equal again, so once a poll's timeout ends while that join is under way, the next
# poll finds no rejoin needed and never takes the join's outcome. The member then holds no partition,
# reads nothing and sends no heartbeat (seen 1 run in 6 of rebalancing tests, and as a 90-minute CI
# hang; reproduced every time in tests/integration/test_group_join.py). `finish_join` works around it
# after every poll: a join still under way is marked needed and awaited for up to JOIN_WAIT_MS (a
# join normally takes well under a second). As a backstop for any other cause, a join unfinished
# after JOIN_STUCK_S is given up: live members rejoin within a poll (seconds) and a dead one is
# dropped after its session timeout, so a join this long is stuck; during it the member holds no
# partition (kafka-python revoked them before joining), so a new consumer replacing it loses nothing:
# it is assigned partitions and seeks to the stored offsets like after any rebalance
# (docs/benchmark-notes.md, "the CI hang").
JOIN_STUCK_S = 120.0
JOIN_WAIT_MS = 5000
# kafka-python's fetch options the consumer sets over its defaults (docs/benchmark-notes.md, "Overlapped
# stages and Kafka fetch options"). 4 MiB per partition fetched a batch of 2,000 records of 2.4 kB in one
# round trip (1.25-1.56x the raw fetch rate), but raised the consumer's peak RSS from about 95 MB to about
# 165 MB on 3 partitions, past the 150 MB budget: kafka-python's 1 MiB stays, written out. A deployment
# with memory to spare may pass `kafka_options`. fetch_min_bytes stays 1 (a lone change is returned at
# once).
FETCH_OPTIONS: dict[str, Any] = {"max_partition_fetch_bytes": 1024 * 1024}


class SeekToStoredOffsets(ConsumerRebalanceListener):
    """On assignment, position every partition at the offset the state store holds.

    `before_rebalance()` is called first on every revocation and assignment: it returns once no
    batch is being applied (the consumer loop may apply one while it polls the next), so that
    partitions are given up only after their state is committed, and positioned at offsets the
    store holds once nothing can move them any more; `after_assignment()` once they are positioned.
    (kafka-python 3 runs these on its IO thread, while the consumer loop may go on.)"""

    def __init__(self, consumer: KafkaConsumer, store: StateStore, health: StoreHealth,
                 before_rebalance: Callable[[], None] | None = None,
                 after_assignment: Callable[[], None] | None = None) -> None:
        self.consumer = consumer
        self.store = store
        self.health = health
        self.before_rebalance = before_rebalance or (lambda: None)
        self.after_assignment = after_assignment or (lambda: None)

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.before_rebalance()
        log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.before_rebalance()
        try:
            self._position(assigned)
        finally:
            self.after_assignment()

    def _position(self, assigned: list[TopicPartition]) -> None:
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

    def seek_all(self, assigned: list[TopicPartition], stored: Offsets | None = None) -> None:
        """Position each partition at the stored offset (the beginning if none)."""
        stored = self.store.stored_offsets() if stored is None else stored
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        log.info("partitions assigned: %s", ", ".join(
            f"{tp.topic}[{tp.partition}]@{stored.get((tp.topic, tp.partition), 'beginning')}"
            for tp in sorted(assigned)))


class GroupReader:
    """One member of the consumer group, reading the configured topics for one `StateStore`.
    `alive()` is called while it waits, so the loop counts as alive for /healthz."""

    def __init__(self, settings: kafka.KafkaSettings, config: ConsumerConfig, store: StateStore,
                 health: StoreHealth, *, client_id: str, poll_timeout_ms: int,
                 alive: Callable[[], None], before_rebalance: Callable[[], None] | None = None,
                 after_assignment: Callable[[], None] | None = None,
                 kafka_options: dict[str, Any] | None = None, join_stuck_s: float = JOIN_STUCK_S) -> None:
        self.settings = settings
        self.config = config
        self.topics = [m.topic for m in config.topics]
        self.poll_timeout_ms = poll_timeout_ms
        self.alive = alive
        self.join_stuck_s = join_stuck_s
        self._options: dict[str, Any] = dict(
            group_id=config.group_id,
            # static membership: a restarted member takes its partitions back at once
            group_instance_id=config.group_instance_id or None,
            client_id=client_id, auto_offset_reset="earliest", max_poll_records=config.batch_size,
            **{**FETCH_OPTIONS, **(kafka_options or {})})
        self.consumer = kafka.consumer(settings, **self._options)
        self.listener = SeekToStoredOffsets(self.consumer, store, health, before_rebalance, after_assignment)
        self._last_commit = time.monotonic()
        self._present: dict[str, bool] = {}
        self._subscribed = False
        self._joining_since: float | None = None  # when the member was last seen not joined
        self.replaced = 0  # consumers replaced after a join that did not finish

    # -- start --------------------------------------------------------------------------
    def find_topics(self) -> tuple[list[TopicPartition], list[str]]:
        """Every partition of the configured topics that exist, and the names of those that do not
        (the metadata is refreshed first when one is missing, so a topic just created is seen)."""
        partitions, missing = self._lookup()
        if missing:
            self.consumer.topics()  # refresh metadata
            partitions, missing = self._lookup()
        return partitions, missing

    def _lookup(self) -> tuple[list[TopicPartition], list[str]]:
        missing, partitions = [], []
        for topic in self.topics:
            ids = self.consumer.partitions_for_topic(topic)
            if not ids:
                missing.append(topic)
            else:
                partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        return partitions, missing

    def offsets_at_start(self, partitions: list[TopicPartition]) -> tuple[Offsets, Offsets]:
        """(beginning, end) offsets of `partitions` now."""
        ends, begins = self.consumer.end_offsets(partitions), self.consumer.beginning_offsets(partitions)
        return _keyed(begins), _keyed(ends)

    def subscribe(self) -> None:
        self.consumer.subscribe(self.topics, listener=self.listener)
        self._subscribed = True

    def assign(self, partitions: list[TopicPartition], stored: Offsets) -> None:
        """Read `partitions` without joining the group (a rebuild reads alone), each from its
        `stored` offset; commits still go to the group, for lag tools."""
        self.consumer.assign(partitions)
        self.listener.seek_all(partitions, stored)

    # -- the loop's calls ---------------------------------------------------------------
    def poll(self, timeout_ms: int | None = None) -> list:
        """The next batch of messages, in partition order; waits at most `timeout_ms` (default:
        the reader's poll timeout) when none has arrived."""
        wait = self.poll_timeout_ms if timeout_ms is None else min(timeout_ms, self.poll_timeout_ms)
        with kafka.decompressing():
            polled = self.consumer.poll(timeout_ms=wait, max_records=self.config.batch_size)
        self._check_join()
        return [m for messages in polled.values() for m in messages]

    def _check_join(self) -> None:
        """Take a join under way to its end (`finish_join`); replace the consumer when its join of the
        group has lasted `join_stuck_s` (see JOIN_STUCK_S)."""
        if not self._subscribed:
            return
        if finish_join(self.consumer, JOIN_WAIT_MS):
            log.debug("a join of group %s was under way after a poll: awaited", self.config.group_id)
        now = time.monotonic()
        if joined(self.consumer):
            self._joining_since = None
            return
        if self._joining_since is None:
            self._joining_since = now
            return
        if now - self._joining_since < self.join_stuck_s:
            return
        log.warning("the Kafka client has not finished joining group %s in %.0f s: a new client replaces it "
                    "(it holds no partition meanwhile; the new one reads from the stored offsets)",
                    self.config.group_id, now - self._joining_since)
        self.close()
        self.consumer = kafka.consumer(self.settings, **self._options)
        self.listener.consumer = self.consumer
        self.consumer.subscribe(self.topics, listener=self.listener)
        self._joining_since = None
        self.replaced += 1

    def reposition(self, stored: Offsets | None = None) -> None:
        """Position every assigned partition at the stored offsets again."""
        self.listener.seek_all(list(self.consumer.assignment()), stored)

    def end_offsets(self, topic: str) -> dict[int, int]:
        tps = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic))]
        return {tp.partition: o for tp, o in self.consumer.end_offsets(tps).items()}

    def positions(self) -> Offsets:
        """The position of every assigned partition (the next offset a poll reads)."""
        out: Offsets = {}
        for tp in self.consumer.assignment():
            try:
                position = self.consumer.position(tp, timeout_ms=5000)
            except KafkaError:
                continue
            if position is not None:
                out[(tp.topic, tp.partition)] = position
        return out

    def commit(self, next_offsets: Offsets) -> None:
        """Commit to Kafka, for lag tools, the offsets of partitions still assigned (a batch
        finished after a rebalance leaves the others to their new owner); a failure is only
        logged (the state is committed)."""
        self._last_commit = time.monotonic()
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                   for (t, p), o in next_offsets.items() if (t, p) in assigned}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except FencedInstanceIdError:
            raise  # another process took this one's group instance id: the loop says so
        except KafkaError as exc:
            log.warning("Kafka offset commit failed (state is committed): %s", exc)

    def confirm_membership(self) -> None:
        """A static member replaced by another process with the same group instance id learns it
        from its next commit only (kafka-python's heartbeat thread stops without a word), and
        meanwhile it would go on reading: so an idle static member commits its positions every
        MEMBERSHIP_CHECK_S."""
        if not self.config.group_instance_id or time.monotonic() - self._last_commit < MEMBERSHIP_CHECK_S:
            return
        positions = {}
        for tp in self.consumer.assignment():
            try:
                positions[(tp.topic, tp.partition)] = self.consumer.position(tp, timeout_ms=5000)
            except KafkaError:
                continue
        positions = {k: o for k, o in positions.items() if o is not None}
        if positions:
            self.commit(positions)
        else:
            self._last_commit = time.monotonic()

    def observe(self, metrics: Metrics) -> None:
        """`ecst_partition_lag` of every assigned partition."""
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=1000)
            except KafkaError:
                continue
            metrics.set("ecst_partition_lag", max(0, high - position), topic=tp.topic,
                        partition=str(tp.partition))

    def check_topics(self, metrics: Metrics) -> None:
        """`ecst_topic_present`, and a warning when a subscribed topic disappears (deleted: its
        connector cannot deliver changes any more) or comes back."""
        for topic in self.topics:
            topic_presence(metrics, self._present, topic, bool(self.consumer.partitions_for_topic(topic)))

    # -- waiting --------------------------------------------------------------------------
    def idle_paused(self, seconds: float, stop: threading.Event) -> None:
        """Spend `seconds` with every partition paused, polling all the while so that the member
        keeps its place in the group (max.poll.interval.ms) and follows rebalances."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            self.alive()
            self.consumer.pause(*self.consumer.assignment())  # also partitions a rebalance brought
            with kafka.decompressing():
                self.consumer.poll(timeout_ms=max(1, min(self.poll_timeout_ms,
                                                         int((deadline - time.monotonic()) * 1000))))
            self._check_join()

    def resume(self, stored: Offsets) -> None:
        """After a state-store outage: position at the offsets the store holds, and resume."""
        assigned = list(self.consumer.assignment())
        self.listener.seek_all(assigned, stored)
        self.consumer.resume(*assigned)

    def wait_for_kafka(self, stop: threading.Event, idle: Callable[[float], None]) -> bool:
        """Wait with capped backoff until a broker answers; True once it does (then reposition:
        a turn cut short may have read records it did not apply), False when stopped."""
        backoff = Backoff()
        while not stop.is_set():
            idle(backoff.next())
            try:
                self.consumer.topics()  # a metadata request: answered once a broker is back
            except KafkaError as again:
                log.debug("Kafka still unreachable: %s", again)
                continue
            self.reposition()
            return True
        return False

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except KafkaError:
            log.warning("error while closing the Kafka consumer", exc_info=True)


def joined(consumer: KafkaConsumer) -> bool:
    """Whether kafka-python's consumer is a member of its group with no join in progress (True for a
    client it does not know how to ask: the check is then off)."""
    coordinator = getattr(consumer, "_coordinator", None)
    stable, need_rejoin = getattr(coordinator, "stable", None), getattr(coordinator, "need_rejoin", None)
    if stable is None or need_rejoin is None:
        return True
    return bool(stable()) and not need_rejoin()


def finish_join(consumer: KafkaConsumer, wait_ms: int) -> bool:
    """When kafka-python's consumer is in the middle of joining its group, take that join to its end
    (at most `wait_ms`): mark the rejoin as needed first, since kafka-python may have stopped
    awaiting it (see the comment above JOIN_STUCK_S), then await it as its own poll would. True when
    a join was under way; False when none was, or for a client it does not know how to ask."""
    coordinator = getattr(consumer, "_coordinator", None)
    joining = getattr(coordinator, "rebalance_in_progress", None)
    marked = getattr(coordinator, "rejoin_needed", None)
    request = getattr(coordinator, "request_rejoin", None)
    ensure = getattr(coordinator, "ensure_active_group", None)
    if joining is None or not isinstance(marked, bool) or request is None or ensure is None:
        return False
    if not joining():
        return False
    if not marked:
        request()  # kafka-python clears it once the join is complete
    try:
        ensure(timeout_ms=wait_ms)
    except KafkaTimeoutError:  # as kafka-python's own poll: the next poll goes on with it
        pass
    return True


def topic_presence(metrics: Metrics, seen: dict[str, bool], topic: str, present: bool) -> None:
    """Set `ecst_topic_present` of `topic`; warn when it disappeared or came back since `seen`."""
    metrics.set("ecst_topic_present", 1.0 if present else 0.0, topic=topic)
    if present != seen.get(topic, True):
        if present:
            log.warning("topic %s exists again: a topic that was deleted and re-created lost "
                        "what it held; check with `ecst verify`", topic)
        else:
            log.warning("topic %s no longer exists (deleted?): the state keeps what was applied, "
                        "and nothing new arrives; docs/runbook.md, 'Change topic deleted', rebuilds "
                        "it with `ecst rebootstrap fresh`", topic)
    seen[topic] = present


def _keyed(offsets: dict[TopicPartition, int]) -> Offsets:
    return {(tp.topic, tp.partition): o for tp, o in offsets.items()}

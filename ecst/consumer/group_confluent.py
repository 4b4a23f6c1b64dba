"""The consumer's side of Kafka on confluent-kafka (librdkafka): the same duties as
`ecst.consumer.group.GroupReader`, for `kafka.client: confluent` (the extra
`ecst[kafka-confluent]`). Its fetch path is C, several times cheaper per record than kafka-python's
(docs/benchmarks.md, "Kafka fetch").

The same contract: on every assignment each partition starts at the offset the state store holds
(the beginning if none); offsets are committed to Kafka after the state, for lag tools only.
librdkafka reconnects to brokers by itself, so a broker outage shows as polls that return
nothing; its errors become the words the consumer loop knows: a retriable one kafka-python's
`KafkaConnectionError` (waited out), a fenced static member `FencedInstanceIdError`, any other
ecst's one-line `KafkaUnavailableError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka.errors import FencedInstanceIdError, KafkaConnectionError

from ecst import kafka
from ecst.consumer.config import ConsumerConfig
from ecst.consumer.events import Record
from ecst.consumer.group import topic_presence
from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import Backoff, StoreHealth
from ecst.consumer.store import StateStore
from ecst.exceptions import (
    ConfigError,
    KafkaAuthenticationError,
    KafkaUnavailableError,
    StateStoreUnavailableError,
)

try:
    import confluent_kafka as ck
except ImportError:  # the optional extra: `ConfluentGroupReader` says how to install it
    ck = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
Offsets = dict[tuple[str, int], int]  # (topic, partition) -> offset
Partition = tuple[str, int]
OFFSET_BEGINNING = -2  # librdkafka's logical offsets (confluent_kafka.OFFSET_*)
METADATA_TIMEOUT_S = 10.0
# librdkafka's own codes for a lost connection: it reconnects by itself, the loop waits
# librdkafka's codes for refused credentials or a failed TLS handshake
AUTHENTICATION = {"_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "_SSL"}
TRANSIENT = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_RESOLVE", "_WAIT_COORD", "_NO_OFFSET"}
# A partition just created has no leader for a moment: the broker answers its offsets requests
# with these until one is elected (seen: NOT_LEADER_FOR_PARTITION right after a connector made
# its topic); asked again every LEADER_RETRY_S for LEADER_WAIT_S before it is an error.
NO_LEADER_YET = {"NOT_LEADER_FOR_PARTITION", "LEADER_NOT_AVAILABLE", "UNKNOWN_TOPIC_OR_PART"}
LEADER_RETRY_S = 0.2
LEADER_WAIT_S = 15.0


def start_offsets(assigned: list[Partition], stored: Offsets) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) to assign: the stored offset, else the beginning."""
    return [(t, p, stored.get((t, p), OFFSET_BEGINNING)) for t, p in assigned]


def describe_start(assigned: list[Partition], stored: Offsets) -> str:
    return ", ".join(f"{t}[{p}]@{stored.get((t, p), 'beginning')}" for t, p in sorted(assigned))


def known_offsets(offsets: list[tuple[str, int, int]]) -> Offsets:
    """The real offsets among librdkafka's answers (a negative one is a logical or unknown one)."""
    return {(t, p): o for t, p, o in offsets if o >= 0}


def mapped_error(error: Any, settings: kafka.KafkaSettings, doing: str) -> Exception:
    """A confluent-kafka `KafkaError` in the words of ecst's consumer loop."""
    name, text = error.name(), error.str()
    if name in ("_FENCED", "FENCED_INSTANCE_ID"):
        return FencedInstanceIdError(text)
    if name in AUTHENTICATION:  # a setting to fix, never waited out
        cause = kafka.login_failure(settings.servers[0], settings.security)
        return kafka.refused(settings, cause) if cause is not None else KafkaAuthenticationError(
            f"Kafka at {settings.bootstrap_servers} refused ecst's login ({text}): check "
            "kafka.security_protocol, kafka.sasl.* and kafka.ssl.*")
    if not error.fatal() and (error.retriable() or name in TRANSIENT):
        return KafkaConnectionError(f"{name}: {text}")
    return KafkaUnavailableError(f"couldn't {doing} Kafka at {settings.bootstrap_servers}: {text} "
                                 "(is the stack up? `ecst stack status`)")


# The prefetch queue's bound, in KiB: at 8 MiB a batch of 2,000 records of 2.4 kB is always
# waiting, and the process stays near kafka-python's peak memory (docs/benchmark-notes.md).
QUEUED_KB = 8192
FETCH_WAIT_MS = 100


def reader_options(settings: kafka.KafkaSettings, config: ConsumerConfig, client_id: str) -> dict[str, Any]:
    """librdkafka's configuration of the group reader: what kafka-python's gets, in its words."""
    options = {
        **settings.confluent_options(),
        "group.id": config.group_id,
        "client.id": client_id,
        "enable.auto.commit": False,  # offsets are committed after the state, by the loop
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        # librdkafka prefetches up to 64 MiB into the consumer's queue by default; QUEUED_KB bounds it
        "queued.max.messages.kbytes": QUEUED_KB,
        "fetch.queue.backoff.ms": 10,
        # A fetch with nothing to return waits this long at the broker, and the reader's other
        # requests (end offsets at a snapshot's markers, metadata) queue behind it on the same
        # connection: librdkafka's 500 ms cost about 0.5 s per such request.
        "fetch.wait.max.ms": FETCH_WAIT_MS,
    }
    if config.group_instance_id:
        options["group.instance.id"] = config.group_instance_id  # static membership
    return options


class ConfluentGroupReader:
    """One member of the consumer group on confluent-kafka; see `GroupReader` for each call."""

    def __init__(self, settings: kafka.KafkaSettings, config: ConsumerConfig, store: StateStore,
                 health: StoreHealth, *, client_id: str, poll_timeout_ms: int,
                 alive: Callable[[], None], before_rebalance: Callable[[], None] | None = None,
                 after_assignment: Callable[[], None] | None = None,
                 kafka_options: dict[str, Any] | None = None) -> None:
        """`before_rebalance` and `after_assignment` as for `GroupReader` (librdkafka calls the
        rebalance callbacks inside the loop's poll, on its thread); `kafka_options` are
        kafka-python's, so they do not apply here."""
        if ck is None:
            raise ConfigError(kafka.CONFLUENT_MISSING)
        self.settings = settings
        self.config = config
        self.store = store
        self.health = health
        self.topics = [m.topic for m in config.topics]
        self.poll_timeout_ms = poll_timeout_ms
        self.alive = alive
        self.sleep: Callable[[float], None] = time.sleep  # a test's clock replaces it
        self._present: dict[str, bool] = {}
        self.before_rebalance = before_rebalance or (lambda: None)
        self.after_assignment = after_assignment or (lambda: None)
        try:
            self.consumer = ck.Consumer(reader_options(settings, config, client_id), logger=log)
        except ck.KafkaException as exc:
            raise self._error(exc, "connect to") from exc

    # -- errors ---------------------------------------------------------------------------
    def _error(self, exc: Exception, doing: str) -> Exception:
        error = exc.args[0] if exc.args and hasattr(exc.args[0], "name") else None
        if error is None:
            return KafkaUnavailableError(f"couldn't {doing} Kafka at {self.settings.bootstrap_servers}: "
                                         f"{exc}")
        return mapped_error(error, self.settings, doing)

    # -- assignment -----------------------------------------------------------------------
    def _on_assign(self, consumer: Any, assigned: list[Any]) -> None:
        self.before_rebalance()
        try:
            self._position(consumer, assigned)
        finally:
            self.after_assignment()

    def _position(self, consumer: Any, assigned: list[Any]) -> None:
        parts = [(tp.topic, tp.partition) for tp in assigned]
        # While the store is away its offsets are unknown: the partitions stay paused (the
        # consumer keeps its place in the group) and are positioned when the store is back.
        if self.health.up:
            try:
                self._assign_at(parts, self.store.stored_offsets())
                return
            except StateStoreUnavailableError as exc:
                self.health.lost(exc)
        consumer.assign(assigned)
        consumer.pause(assigned)

    def _on_revoke(self, consumer: Any, revoked: list[Any]) -> None:
        self.before_rebalance()  # the batch in flight commits its state before the partitions go
        log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))
        consumer.unassign()

    def _assign_at(self, parts: list[Partition], stored: Offsets) -> None:
        self.consumer.assign([ck.TopicPartition(t, p, o) for t, p, o in start_offsets(parts, stored)])
        log.info("partitions assigned: %s", describe_start(parts, stored))

    def _assigned(self) -> list[Partition]:
        return [(tp.topic, tp.partition) for tp in self.consumer.assignment()]

    # -- start --------------------------------------------------------------------------
    def _partitions(self, topic: str) -> list[int]:
        try:
            meta = self.consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        except ck.KafkaException as exc:
            raise self._error(exc, "read metadata from") from exc
        if meta is None or meta.error is not None:
            return []
        return sorted(meta.partitions)

    def find_topics(self) -> tuple[list[Partition], list[str]]:
        """Every partition of the configured topics that exist, and the names of those that do not."""
        missing, partitions = [], []
        for topic in self.topics:
            ids = self._partitions(topic)
            if not ids:
                missing.append(topic)
            partitions += [(topic, p) for p in ids]
        return partitions, missing

    def _watermarks(self, parts: list[Partition]) -> tuple[Offsets, Offsets]:
        begins, ends = {}, {}
        deadline = time.monotonic() + LEADER_WAIT_S
        for t, p in parts:
            while True:
                try:
                    low, high = self.consumer.get_watermark_offsets(ck.TopicPartition(t, p),
                                                                    timeout=METADATA_TIMEOUT_S)
                    break
                except ck.KafkaException as exc:
                    error = exc.args[0] if exc.args and hasattr(exc.args[0], "name") else None
                    if error is None or error.name() not in NO_LEADER_YET or time.monotonic() >= deadline:
                        raise self._error(exc, "read offsets from") from exc
                    log.debug("offsets of %s[%d]: %s; asking again", t, p, error.name())
                    self.alive()
                    self.sleep(LEADER_RETRY_S)
            begins[(t, p)], ends[(t, p)] = low, high
        return begins, ends

    def offsets_at_start(self, partitions: list[Partition]) -> tuple[Offsets, Offsets]:
        """(beginning, end) offsets of `partitions` now."""
        return self._watermarks(partitions)

    def subscribe(self) -> None:
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)

    def assign(self, partitions: list[Partition], stored: Offsets) -> None:
        """Read `partitions` without joining the group (a rebuild reads alone), each from its
        `stored` offset; commits still go to the group, for lag tools."""
        self._assign_at(partitions, stored)

    # -- the loop's calls ---------------------------------------------------------------
    def poll(self, timeout_ms: int | None = None) -> list[Record]:
        """The next batch of records (in offset order within each partition); waits at most
        `timeout_ms` (default: the reader's poll timeout) when none has arrived."""
        wait = self.poll_timeout_ms if timeout_ms is None else min(timeout_ms, self.poll_timeout_ms)
        try:
            messages: list[Any] = self.consumer.consume(num_messages=self.config.batch_size,
                                                        timeout=wait / 1000)
        except ck.KafkaException as exc:
            raise self._error(exc, "read from") from exc
        out = []
        for m in messages:
            error = m.error()
            if error is None:
                kind, ts = m.timestamp()
                out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                                  ts if kind != ck.TIMESTAMP_NOT_AVAILABLE and ts >= 0 else None))
                continue
            mapped = mapped_error(error, self.settings, "read from")
            if not isinstance(mapped, KafkaConnectionError):  # librdkafka retries those by itself
                if error.fatal() or isinstance(mapped, FencedInstanceIdError):
                    raise mapped
            log.warning("Kafka: %s", error.str())  # e.g. a deleted topic: check_topics says more
        return out

    def reposition(self, stored: Offsets | None = None) -> None:
        """Position every assigned partition at the stored offsets again."""
        self._assign_at(self._assigned(), self.store.stored_offsets() if stored is None else stored)

    def end_offsets(self, topic: str) -> dict[int, int]:
        _, ends = self._watermarks([(topic, p) for p in self._partitions(topic)])
        return {p: o for (_, p), o in ends.items()}

    def _positions(self) -> Offsets:
        tps = self.consumer.assignment()
        if not tps:
            return {}
        try:
            return known_offsets([(tp.topic, tp.partition, tp.offset) for tp in self.consumer.position(tps)])
        except ck.KafkaException:
            return {}

    def positions(self) -> Offsets:
        """The position of every assigned partition (the next offset a poll reads)."""
        return self._positions()

    def commit(self, next_offsets: Offsets) -> None:
        """Commit to Kafka, for lag tools; a failure is only logged (the state is committed)."""
        try:
            self.consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
                                 asynchronous=False)
        except ck.KafkaException as exc:
            mapped = self._error(exc, "commit to")
            if isinstance(mapped, FencedInstanceIdError):
                raise mapped from exc  # another process took this one's group instance id
            log.warning("Kafka offset commit failed (state is committed): %s", exc)

    def confirm_membership(self) -> None:
        """Nothing to do: librdkafka's heartbeats go on, and a fenced static member's next poll
        returns the fatal error."""

    def observe(self, metrics: Metrics) -> None:
        """`ecst_partition_lag` of every assigned partition."""
        positions = self._positions()
        for t, p in self._assigned():
            try:
                _, high = self.consumer.get_watermark_offsets(ck.TopicPartition(t, p), cached=True)
            except ck.KafkaException:
                continue
            if high is None or high < 0 or (t, p) not in positions:
                continue
            metrics.set("ecst_partition_lag", max(0, high - positions[(t, p)]), topic=t, partition=str(p))

    def check_topics(self, metrics: Metrics) -> None:
        """`ecst_topic_present`, and a warning when a subscribed topic disappears or comes back."""
        for topic in self.topics:
            try:
                present = bool(self._partitions(topic))
            except KafkaConnectionError:
                continue
            topic_presence(metrics, self._present, topic, present)

    # -- waiting --------------------------------------------------------------------------
    def idle_paused(self, seconds: float, stop: threading.Event) -> None:
        """Spend `seconds` with every partition paused, polling all the while so that the member
        keeps its place in the group and follows rebalances (what the polls return is dropped:
        `resume` positions every partition at the stored offsets)."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            self.alive()
            tps = self.consumer.assignment()
            if tps:
                self.consumer.pause(tps)  # also partitions a rebalance brought
            self.consumer.consume(num_messages=1, timeout=max(
                0.001, min(self.poll_timeout_ms / 1000, deadline - time.monotonic())))

    def resume(self, stored: Offsets) -> None:
        """After a state-store outage: position at the offsets the store holds, and resume."""
        self._assign_at(self._assigned(), stored)
        tps = self.consumer.assignment()
        if tps:
            self.consumer.resume(tps)

    def wait_for_kafka(self, stop: threading.Event, idle: Callable[[float], None]) -> bool:
        """Wait with capped backoff until a broker answers; True once it does (then reposition)."""
        backoff = Backoff()
        while not stop.is_set():
            idle(backoff.next())
            try:
                self.consumer.list_topics(timeout=METADATA_TIMEOUT_S)
            except ck.KafkaException as again:
                log.debug("Kafka still unreachable: %s", again)
                continue
            self.reposition()
            return True
        return False

    def close(self) -> None:
        try:
            self.consumer.close()
        except (ck.KafkaException, RuntimeError):
            log.warning("error while closing the Kafka consumer", exc_info=True)

"""Re-bootstrap: rebuild a consumer's private state in a shadow copy, then swap it in.

Four sources of truth, each chosen explicitly (docs/operators.md: "Which re-bootstrap do I need?"):

- `replay`: the compacted topic from its beginning. Zero load on the producer database.
- `incremental`: a Debezium incremental snapshot (an `execute-snapshot` signal), read in key
  chunks while streaming goes on. With a condition it is a *filtered backfill*.
- `blocking`: a blocking-snapshot signal; streaming pauses while the table is read.
- `fresh`: the connector's offsets are reset (and its slot dropped) so it takes a new initial
  snapshot: for when the topic is gone too, or the producer's positions restarted.

A full rebuild writes `ecst_shadow__<table>` while the live tables keep serving. The shadow
starts at the topic's end offsets (replay: at its beginning), so it receives the streamed
changes as well as the snapshot rows, through the same position guards as the live state.
Once the snapshot is known complete (incremental: Debezium's COMPLETED notification for our
signal id; blocking and fresh: the snapshot's `last` marker and the end offsets of that moment;
replay: the end offsets taken at start) and the shadow has caught up, `StateStore.promote`
swaps it in one transaction: keys the rebuild never saw are gone. A filtered backfill keeps only
the snapshot rows, and merges them into the live state in one transaction through the guards: it
touches only the matching keys.

Progress: a replay counts the topic's offsets from its beginning to the end offsets taken at
start, and finishes exactly there, so its bar ends at 100%. It counts offsets, not records: a
compacted topic has gaps in its offsets, and only reading it would count what compaction left
(the summary gives the records read). A snapshot mode counts the snapshot rows (op=r) it reads,
out of the planner's estimate for the table; a filtered backfill's total is unknown until
Debezium has read it (ecst never runs the condition itself: `ecst.connectors.conditions`).

Failures: before signalling, the connector and every one of its tasks must be RUNNING (Connect
says RUNNING of a connector whose only task FAILED); while waiting, a task that fails, a snapshot
Debezium aborts, or a table scan it ends with an error (a filter Postgres refused: its
notification's status is SQL_EXCEPTION) raise SnapshotFailedError, and the shadow copy is
discarded: nothing can complete it, and it must not block the next command (e.g. the `fresh`
rebuild that recovers a lost replication slot).

The bookkeeping (mode, signal id, where the notifications start, progress) is stored with the
shadow, so running the same command again after a crash resumes; `restart=True` discards it.
One rebuild runs at a time per state (`rebuild_lock`): a second one, `--restart` or not, is
refused before it looks at the shadow.

Here: `rebuild` (the steps every mode shares), one class per mode, and the shadow consumer. Beside
it: `rebuild_state` (the bookkeeping, resume rules, result), `rebuild_wait` (waiting for a
snapshot), `progress` (the progress line); the connector side is in `ecst.connectors`
(`snapshot_source`, `notifications`, `reset`, `producer`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from sqlalchemy import func, select

from ecst import kafka
from ecst.connectors import signals
from ecst.connectors.conditions import check_condition
from ecst.connectors.notifications import NotificationFollower, notification_offsets
from ecst.connectors.producer import estimate_rows
from ecst.connectors.reset import reset_connector
from ecst.connectors.snapshot_source import SnapshotSource
from ecst.consumer.config import ConsumerConfig
from ecst.consumer.events import ChangeEvent
from ecst.consumer.progress import Progress
from ecst.consumer.rebuild_lock import RebuildLock
from ecst.consumer.rebuild_state import (
    SNAPSHOTTING,
    STARTING,
    PartitionRange,
    RebuildResult,
    RebuildState,
    open_rebuild,
)
from ecst.consumer.rebuild_wait import ConnectorWatch, IncrementalCompletion, SnapshotStart
from ecst.consumer.runner import Consumer, RebuildPolicy
from ecst.consumer.shadow import SHADOW
from ecst.consumer.store import StateStore
from ecst.consumer.writes import ApplyStats
from ecst.exceptions import ConfigError, ProducerError, RebuildError, SnapshotFailedError

log = logging.getLogger(__name__)

MODES = ("replay", "incremental", "blocking", "fresh")
HEALTHY_WAIT_S = 30.0  # for tasks in passing states (UNASSIGNED, RESTARTING) before a signal
SAVE_EVERY_S = 1.0

__all__ = ["MODES", "SHADOW", "Progress", "RebuildResult", "RebuildState", "SnapshotSource", "rebuild",
           "replay"]


# --------------------------------------------------------------------------------------------
def replay(state_url: str, config: ConsumerConfig, bootstrap: kafka.KafkaSettings | str, *,
           restart: bool = False, progress: Callable[[Progress], None] | None = None) -> RebuildResult:
    """Rebuild every mapped topic's state from the topic, in a shadow copy, then swap it in."""
    return rebuild("replay", state_url, config, bootstrap, restart=restart, progress=progress)


def rebuild(mode: str, state_url: str, config: ConsumerConfig, bootstrap: kafka.KafkaSettings | str, *,
            source: SnapshotSource | None = None, condition: str | None = None,
            restart: bool = False, progress: Callable[[Progress], None] | None = None
            ) -> RebuildResult:
    """Rebuild the state of every topic in `config` with `mode` (one of MODES). Every Kafka
    client it makes (offsets, signals, notifications, the shadow consumer) gets `bootstrap`'s
    settings, with the config's security settings (kafka.security_protocol, .sasl, .ssl)."""
    bootstrap = kafka.as_settings(bootstrap, None, config.kafka_security)
    prepare = _mode_of(mode, source, condition)
    if condition is not None:
        condition = check_condition(condition)  # one condition, or refused before anything is done
    started = time.monotonic()
    topics = [m.topic for m in config.topics]
    live = StateStore(state_url)
    shadow = StateStore(state_url, namespace=SHADOW)
    lock = RebuildLock(live.engine, live.safe_url)
    try:
        lock.acquire()  # before the shadow is looked at: a second rebuild must not touch it
        state = open_rebuild(shadow, mode, condition, restart)
        resumed = state is not None
        how = prepare(bootstrap, topics)  # its checks run before anything is recorded or sent
        if state is None:
            state = how.begin(shadow, condition)
        else:
            how.resume(state)
        run = ShadowRun(shadow, config, bootstrap, state, progress)
        if state.phase == STARTING:
            how.trigger(state)
            state.phase = SNAPSHOTTING
            shadow.save_rebuild_record(state.to_dict())
        how.consume(run)
        run.finish()
        return _finish(live, shadow, run, started, resumed, topics)
    except SnapshotFailedError as exc:
        # nothing can complete this rebuild: its shadow must not block the next command
        unfinished = shadow.rebuild_record() is not None or bool(shadow.tables())
        shadow.discard()
        if unfinished and "discarded" not in str(exc):
            raise SnapshotFailedError(f"{exc}; the unfinished rebuild was discarded") from exc
        raise
    finally:
        lock.release()
        live.close()
        shadow.close()


def _mode_of(mode: str, source: SnapshotSource | None, condition: str | None
             ) -> Callable[[kafka.KafkaSettings, list[str]], _Mode]:
    """How to prepare `mode`, or a ConfigError for a mode, connector or condition that cannot go
    together (checked before anything is opened)."""
    if mode not in MODES:
        raise ConfigError(f"rebuild mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "replay":
        prepare: Callable[[kafka.KafkaSettings, list[str]], _Mode] = ReplayMode
    elif source is None:
        raise ConfigError(f"a {mode} rebuild needs the connector (--connector) to signal")
    else:
        prepare = partial(SNAPSHOT_MODES[mode].prepare, source)
    if condition is not None and mode != "incremental":
        raise ConfigError("--where (a filtered backfill) works with the incremental mode only")
    return prepare


# -- the modes ---------------------------------------------------------------------------------
class _Mode:
    """One way to rebuild: what it records at the start, what it sets off, how long it reads."""

    name = ""

    def begin(self, shadow: StateStore, condition: str | None) -> RebuildState:
        """Record a new rebuild and start its empty shadow copy."""
        raise NotImplementedError

    def resume(self, state: RebuildState) -> None:
        """Complete the bookkeeping of a rebuild begun earlier, if needed."""

    def trigger(self, state: RebuildState) -> None:
        """Set off the snapshot the rebuild reads (once: phase `starting`)."""

    def consume(self, run: ShadowRun) -> None:
        """Read into the shadow until the rebuild is complete and the shadow caught up."""
        raise NotImplementedError


class ReplayMode(_Mode):
    """The compacted topic from its beginning, to the end offsets taken at the start."""

    name = "replay"

    def __init__(self, bootstrap: kafka.KafkaSettings | str, topics: list[str]) -> None:
        self.bootstrap, self.topics = bootstrap, topics

    def _range(self, state: RebuildState) -> None:
        """What a replay reads: each partition from its beginning to its end offset of now, and
        the offsets that spans (its progress total)."""
        begins, ends = kafka.topic_offsets(self.bootstrap, self.topics)
        state.offsets = [PartitionRange(t, p, begins[(t, p)], end) for (t, p), end in sorted(ends.items())]
        state.rows_expected = sum(end - begins[tp] for tp, end in ends.items())
        state.unit = "offsets"

    def begin(self, shadow: StateStore, condition: str | None) -> RebuildState:
        state = RebuildState(self.name, condition, signal_id=signals.new_signal_id())
        self._range(state)
        shadow.begin_rebuild({}, state.to_dict())
        return state

    def resume(self, state: RebuildState) -> None:
        if state.offsets is None:  # begun by an older ecst
            self._range(state)

    def consume(self, run: ShadowRun) -> None:
        # to the end offsets taken at start: `until` (or later ones, which the runner reaches past
        # any trailing transaction markers: `until_caught_up`)
        run.consume(run.reached, until_caught_up=True)


class _SnapshotMode(_Mode):
    """What the snapshot-based modes share: a connector, its channels, the start at the topics'
    end offsets, and a row estimate for the progress bar."""

    def __init__(self, source: SnapshotSource, channels: signals.Channels,
                 bootstrap: kafka.KafkaSettings | str, topics: list[str]) -> None:
        self.source, self.channels, self.bootstrap, self.topics = source, channels, bootstrap, topics

    @classmethod
    def prepare(cls, source: SnapshotSource, bootstrap: kafka.KafkaSettings | str,
                topics: list[str]) -> _SnapshotMode:
        """The mode for `source`'s connector, or an error naming the key to set (or the failed
        task) when the connector cannot take the snapshot."""
        mode = cls(source, source.channels(), bootstrap, topics)
        mode.check()
        return mode

    def check(self) -> None:
        """Refuse, with the key to set, a rebuild the connector is not configured for."""

    def _require_running(self, wait_s: float = 0.0) -> None:
        problem = self.source.problem(wait_s=wait_s)
        if problem is not None:
            raise SnapshotFailedError(f"connector {self.source.connector!r} cannot take the {self.name} "
                                      f"snapshot, so nothing was sent: {problem}")

    def _signalled_check(self) -> None:
        """The checks of the modes that signal the connector (incremental, blocking)."""
        if self.source.channel_for(self.channels) == "source" and self.source.producer is None:
            raise ProducerError("the signal-table channel needs the producer database: pass "
                              "--producer-url, or use --channel kafka")
        self._require_running(wait_s=HEALTHY_WAIT_S)  # `fresh` is what recovers a failed connector

    def _estimate(self, tables: list[str]) -> int:
        """The planner's estimate of the tables' rows (a progress total; 0: unknown)."""
        if self.source.producer is None:
            return 0
        try:
            with self.source.producer() as conn:
                return sum(estimate_rows(conn, t) for t in tables)
        except Exception as exc:  # an estimate only: the rebuild does not depend on it
            log.warning("no row estimate from the producer database (%s)", exc)
            return 0

    def begin(self, shadow: StateStore, condition: str | None) -> RebuildState:
        tables = [signals.data_collection(t, self.channels.prefix) for t in self.topics]
        state = RebuildState(self.name, condition, signal_id=signals.new_signal_id(),
                             connector=self.source.connector, tables=tables, unit="rows")
        # a filtered backfill's total is unknown: ecst never runs the condition (not even in EXPLAIN)
        state.rows_expected = 0 if condition else self._estimate(tables)
        self._before_start(state)
        start = kafka.topic_offsets(self.bootstrap, self.topics)[1]  # {} when the topic is gone (fresh)
        shadow.begin_rebuild(start, state.to_dict())
        log.info("%s rebuild starts at %s", self.name, start)
        return state

    def _before_start(self, state: RebuildState) -> None:
        """Anything else to record before the shadow starts."""

    def _signal(self, state: RebuildState) -> None:
        self.source.config()  # the connector still exists
        self._require_running()
        signal = signals.SnapshotSignal(_signal_id(state), tuple(state.tables or ()), self.name,
                                        state.condition)
        self.source.send(signal, self.channels, self.bootstrap)

    def _until_snapshot_applied(self, run: ShadowRun) -> None:
        """Blocking and fresh: the run ends once every topic's snapshot (its `last` marker) is
        applied and the shadow caught up with the end offsets of that moment."""
        watch = ConnectorWatch(self.source, self.name)
        run.consume(SnapshotStart(run.consumer, self.topics, self.name, watch), until_ready=True)


class IncrementalMode(_SnapshotMode):
    """An incremental snapshot (an `execute-snapshot` signal), complete on Debezium's COMPLETED
    notification for its signal id; with a condition, a filtered backfill."""

    name = "incremental"

    def check(self) -> None:
        self.channels.require_notifications()
        self._signalled_check()

    def _before_start(self, state: RebuildState) -> None:
        state.notify_from = notification_offsets(self.bootstrap, self.channels.require_notifications())

    def trigger(self, state: RebuildState) -> None:
        self._signal(state)

    def consume(self, run: ShadowRun) -> None:
        state = run.state
        follower = NotificationFollower(self.bootstrap, self.channels.require_notifications(),
                                        _signal_id(state), state.notify_from)
        completed = IncrementalCompletion(follower, self.source, state.condition, list(state.tables or ()))
        try:
            run.consume(completed)
        finally:
            completed.close()
        run.consume(None, until_caught_up=True)  # what was sent before


class BlockingMode(_SnapshotMode):
    """A blocking snapshot (a signal): streaming pauses while the table is read."""

    name = "blocking"

    def check(self) -> None:
        self._signalled_check()

    def trigger(self, state: RebuildState) -> None:
        self._signal(state)

    def consume(self, run: ShadowRun) -> None:
        self._until_snapshot_applied(run)


class FreshMode(_SnapshotMode):
    """The connector reset (offsets deleted, slot dropped): it takes a new initial snapshot."""

    name = "fresh"

    def trigger(self, state: RebuildState) -> None:
        reset_connector(self.source.client, self.source.connector, self.source.config(),
                        self.source.producer)

    def consume(self, run: ShadowRun) -> None:
        self._until_snapshot_applied(run)


def _signal_id(state: RebuildState) -> str:
    if state.signal_id is None:
        raise RebuildError(f"the {state.mode} rebuild in progress has no signal id in its bookkeeping: "
                           "re-run with --restart")
    return state.signal_id


SNAPSHOT_MODES: dict[str, type[_SnapshotMode]] = {
    m.name: m for m in (IncrementalMode, BlockingMode, FreshMode)}


# -- the shadow consumer -----------------------------------------------------------------------
class ShadowRun:
    """The shadow consumer of one rebuild, and its progress bookkeeping."""

    def __init__(self, shadow: StateStore, config: ConsumerConfig, bootstrap: kafka.KafkaSettings | str,
                 state: RebuildState,
                 progress: Callable[[Progress], None] | None) -> None:
        mode, condition = state.mode, state.condition
        self.shadow, self.state, self.callback, self.mode = shadow, state, progress, mode
        self.base = state.rows_applied
        self.rows = SnapshotRows(condition is not None) if mode != "replay" else None
        # a replay reads each partition from its beginning to its end offset of the start
        self.range = {(r.topic, r.partition): (r.begin, r.end) for r in state.offsets or ()}
        unit = "offsets" if mode == "replay" else "rows"
        self.progress = Progress(self.base, state.rows_expected, time.monotonic(), unit)
        # a snapshot mode knows completion from the snapshot itself, never from a caught-up replay
        self.policy = RebuildPolicy(accept=self.rows, cold_start_completes=mode == "replay",
                                    reads_alone=True)
        # it joins no group (`reads_alone`), so no static membership either: its commits are plain ones
        self.consumer = Consumer(shadow, config=config.with_(group_id=f"{config.group_id}-rebuild",
                                                             group_instance_id=""),
                                 bootstrap_servers=bootstrap, policy=self.policy)
        self.saved = 0.0
        self.at_end = False
        if mode == "replay":
            self._replayed()

    def _replayed(self) -> None:
        """Offsets done: per partition, how far the shadow's stored offset is into its range."""
        stored = self.shadow.stored_offsets()
        done = 0
        for tp, (begin, end) in self.range.items():
            done += min(max(stored.get(tp, begin), begin), end) - begin
        self.progress.done = done
        topics = {t for t, _p in self.range}
        # a topic missing at start has no range: then only the runner's own end offsets decide
        self.at_end = done == self.progress.expected and all(
            t in topics for t in self.consumer.topics)

    def consume(self, until: Callable[[], bool] | None, *, until_caught_up: bool = False,
                until_ready: bool = False) -> None:
        """Run the shadow consumer until `until()` (or caught up, or ready)."""
        self.policy.until = until
        try:
            self.consumer.run(until_caught_up=until_caught_up, until_ready=until_ready,
                              on_batch=self.on_batch)
        finally:
            self.policy.until = None

    def reached(self) -> bool:
        """For `until`: the replay has read every partition to the end offset of its start."""
        return self.at_end

    def on_batch(self, _stats: ApplyStats) -> None:
        if self.rows is None:
            self._replayed()
        else:
            self.progress.done = self.base + self.rows.count
        if self.callback is not None:
            self.callback(self.progress)
        self.save()

    def finish(self) -> None:
        """The last report: the run has ended, so a replay read its whole range (its stored
        offsets may stop short of a trailing transaction marker, which its position passed)."""
        if self.rows is None:
            self.progress.done = self.progress.expected
        self.progress.finished = True
        if self.callback is not None:
            self.callback(self.progress)
        self.save(force=True)

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.saved >= SAVE_EVERY_S:
            self.saved = now
            self.state.rows_applied = self.progress.done
            self.state.rate = round(self.progress.rate, 1)
            self.shadow.save_rebuild_record(self.state.to_dict())


class SnapshotRows:
    """Counts the snapshot rows (op=r) a rebuild reads, as the consumer reads them (its `accept`
    hook). A batch writes each key once, as its newest event: a snapshot row followed in its
    batch by a streamed change to the same key is applied as that change, so the applied
    operations undercount the snapshot. Each offset counts once, should a batch be read again.
    For a filtered backfill it also keeps only the incremental-snapshot rows."""

    def __init__(self, only_incremental: bool) -> None:
        self.only_incremental = only_incremental
        self.count = 0
        self.read_to: dict[tuple[str, int], int] = {}  # next offset not yet counted

    def __call__(self, event: ChangeEvent) -> bool:
        if self.only_incremental and not (event.op == "r" and event.snapshot == "incremental"):
            return False
        tp = (event.topic, event.partition)
        if event.offset >= self.read_to.get(tp, 0):
            self.read_to[tp] = event.offset + 1
            self.count += event.op == "r"
        return True


# -- the swap --------------------------------------------------------------------------------
def _finish(live: StateStore, shadow: StateStore, run: ShadowRun, started: float, resumed: bool,
            topics: list[str]) -> RebuildResult:
    state = run.state
    result = RebuildResult([], run.consumer.stats.records, {}, {}, 0.0, resumed, state.mode,
                           run.progress.done if state.mode != "replay" else 0)
    if state.condition:
        result.tables = shadow.tables()
        result.merged = live.merge_from(shadow)
        shadow.discard()
    else:
        for topic in topics:  # the snapshot (or replay) is complete and the shadow caught up
            shadow.mark_snapshot_complete(topic)
        tables = shadow.tables()
        result.rows_before = {t: live.count(t) for t in tables}
        result.removed = {t: _missing_from(live, shadow, t) for t in tables}
        result.tables = live.promote(shadow)
        result.rows_after = {t: live.count(t) for t in result.tables}
    result.seconds = time.monotonic() - started
    state.phase, state.finished_at, state.result = "complete", time.time(), result.as_dict()
    live.save_rebuild_record(state.to_dict())
    return result


def _missing_from(live: StateStore, shadow: StateStore, table: str) -> int:
    """How many live keys the shadow does not have: the deletes the swap reconciles."""
    if not live.has_table(table):
        return 0
    lt, st = live.load_table(table), shadow.load_table(table)
    keys = [c.name for c in st.primary_key.columns]
    with live.engine.connect() as conn:
        match = select(1).where(*[st.c[k] == lt.c[k] for k in keys]).exists()
        return conn.execute(select(func.count()).select_from(lt).where(~match)).scalar_one()

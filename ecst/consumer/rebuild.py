"""Re-bootstrap: rebuild a consumer's private state in a shadow copy, then swap it in.

Four sources of truth, each chosen explicitly (README: "Which re-bootstrap do I need?"):

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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import func, select

from ecst.connectors import health, signals
from ecst.connectors.client import ConnectClient
from ecst.connectors.conditions import check_condition
from ecst.connectors.slots import slot_name
from ecst.consumer.config import ConsumerConfig
from ecst.consumer.events import ChangeEvent
from ecst.consumer.runner import Consumer, RebuildPolicy
from ecst.consumer.store import SHADOW, ApplyStats, StateStore
from ecst.exceptions import ConfigError, RebuildError, SnapshotFailedError

log = logging.getLogger(__name__)

MODES = ("replay", "incremental", "blocking", "fresh")
START_TIMEOUT_S = 120.0  # a snapshot the connector has not started by then is reported
HEALTHY_WAIT_S = 30.0  # for tasks in passing states (UNASSIGNED, RESTARTING) before a signal
WATCH_EVERY_S = 5.0  # how often the connector's tasks are checked while a rebuild waits
SAVE_EVERY_S = 1.0
SNAPSHOT_MODES_FOR_FRESH = {"initial", "always", "when_needed"}

__all__ = ["MODES", "SHADOW", "Progress", "RebuildResult", "SnapshotSource", "rebuild", "replay"]


@dataclass
class Progress:
    """How far a rebuild is: rows (snapshot modes) or offsets (replay) done out of those
    expected, and the rate. `finished` is set on the rebuild's last report."""

    done: int
    expected: int
    started: float
    unit: str = "records"
    finished: bool = False

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    @property
    def eta_s(self) -> float | None:
        if not self.expected or not self.done or self.rate <= 0:
            return None
        return max(0.0, self.expected - self.done) / self.rate

    def line(self, width: int = 30) -> str:
        if not self.expected:
            return f"{self.done:,} {self.unit} applied (total unknown), {self.rate:,.0f}/s"
        if self.done > self.expected or (self.finished and self.done != self.expected):
            # the expected figure was an estimate (the planner's, for a snapshot mode)
            return (f"[{'#' * width}] {self.done:,} {self.unit} (estimate was {self.expected:,}), "
                    f"{self.rate:,.0f}/s")
        frac = self.done / self.expected
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        eta = f", ETA {self.eta_s:.0f} s" if self.eta_s is not None and not self.finished else ""
        return (f"[{bar}] {self.done:,}/{self.expected:,} {self.unit} ({frac:.0%}), "
                f"{self.rate:,.0f}/s{eta}")


@dataclass
class RebuildResult:
    """The summary of a rebuild."""

    tables: list[str]
    records: int
    rows_before: dict[str, int]
    rows_after: dict[str, int]
    seconds: float
    resumed: bool
    mode: str = "replay"
    snapshot_rows: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # live keys the source no longer has
    merged: int | None = None  # filtered backfill: rows offered to the live state

    def summary(self) -> str:
        how = "resumed and finished" if self.resumed else "finished"
        head = f"{self.mode} rebuild {how} in {self.seconds:.1f} s: {self.records:,} records read"
        if self.mode != "replay":
            head += f", {self.snapshot_rows:,} snapshot rows"
        if self.merged is not None:
            return head + f"; filtered backfill merged {self.merged:,} rows into the live state"
        parts = []
        for t in self.tables:
            before, after = self.rows_before.get(t, 0), self.rows_after.get(t, 0)
            parts.append(f"{t}: {after:,} rows (was {before:,}; {self.removed.get(t, 0):,} deleted "
                         "rows reconciled)")
        return head + "; " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "tables": self.tables, "records": self.records,
                "snapshot_rows": self.snapshot_rows, "rows_before": self.rows_before,
                "rows_after": self.rows_after, "removed": self.removed, "merged": self.merged,
                "seconds": round(self.seconds, 3), "resumed": self.resumed}


@dataclass
class SnapshotSource:
    """The connector side of a snapshot-based rebuild: how to reach it and signal it.

    `producer` opens a connection to the producer database, when one is known: it is needed to
    insert into the signal table (channel `source`) and to drop the slot (mode `fresh`), and is
    used read-only for a row estimate (EXPLAIN of the whole table) for the progress bar.
    `connect_log` is the Connect worker's log file, when it is readable from here (the local
    stack's): Postgres's message for a snapshot query that failed is only there.
    """

    client: ConnectClient
    connector: str
    channel: str = "auto"
    producer: Callable[[], Any] | None = None
    connect_log: Path | None = None

    def config(self) -> dict[str, str]:
        config = self.client.get_config(self.connector)
        if config is None:
            raise RebuildError(f"connector {self.connector!r} does not exist on {self.client.url}: "
                               "`ecst connectors list`")
        return config

    def state(self) -> str:
        status = self.client.status(self.connector) or {}
        return str((status.get("connector") or {}).get("state", "UNKNOWN"))

    def _slot(self) -> str | None:
        return slot_name(self.client.get_config(self.connector) or {})

    def failure(self) -> health.Diagnosis | None:
        """A FAILED task (or connector), diagnosed with its next step; None otherwise."""
        status = self.client.status(self.connector)
        return health.diagnose(self.connector, status, self._slot()) if status is not None else None

    def problem(self, wait_s: float = 0.0) -> str | None:
        """Why the connector cannot act on a snapshot signal now, with the next step; None when
        it and every one of its tasks are RUNNING. Passing states (a task UNASSIGNED or
        RESTARTING) are waited out for up to `wait_s`; a FAILED task is reported at once."""
        deadline = time.monotonic() + wait_s
        while True:
            status = self.client.status(self.connector)
            if status is None:
                return f"it does not exist on {self.client.url} (`ecst connectors list`)"
            found = health.diagnose(self.connector, status, self._slot())
            if found is not None:
                return f"{found.message.rstrip('.')}. Next: {found.next}"
            state = str((status.get("connector") or {}).get("state", "UNKNOWN"))
            tasks = health.tasks_of(status)
            if state == "RUNNING" and tasks and all(t.state == "RUNNING" for t in tasks):
                return None
            if state in ("PAUSED", "STOPPED"):
                return (f"it is {state}: `ecst connectors resume {self.connector}`, then run this "
                        "command again")
            if time.monotonic() >= deadline:
                what = ", ".join(f"task {t.id} is {t.state}" for t in tasks) or "it has no tasks"
                return (f"it is {state} and {what}, not RUNNING (`ecst connectors status "
                        f"{self.connector}`)")
            time.sleep(1.0)


# --------------------------------------------------------------------------------------------
def replay(state_url: str, config: ConsumerConfig, bootstrap: str, *, restart: bool = False,
           progress: Callable[[Progress], None] | None = None) -> RebuildResult:
    """Rebuild every mapped topic's state from the topic, in a shadow copy, then swap it in."""
    return rebuild("replay", state_url, config, bootstrap, restart=restart, progress=progress)


def rebuild(mode: str, state_url: str, config: ConsumerConfig, bootstrap: str, *,
            source: SnapshotSource | None = None, condition: str | None = None,
            restart: bool = False, progress: Callable[[Progress], None] | None = None
            ) -> RebuildResult:
    """Rebuild the state of every topic in `config` with `mode` (one of MODES)."""
    if mode not in MODES:
        raise ConfigError(f"rebuild mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode != "replay" and source is None:
        raise ConfigError(f"a {mode} rebuild needs the connector (--connector) to signal")
    if condition is not None and mode != "incremental":
        raise ConfigError("--where (a filtered backfill) works with the incremental mode only")
    if condition is not None:
        condition = check_condition(condition)  # one condition, or refused before anything is done
    started = time.monotonic()
    topics = [m.topic for m in config.topics]
    live = StateStore(state_url)
    shadow = StateStore(state_url, namespace=SHADOW)
    try:
        record = _open(shadow, mode, condition, restart)
        resumed = record is not None
        channels = None
        if mode != "replay":
            assert source is not None
            channels = signals.Channels.of(source.connector, source.config())
            _check(mode, source, channels)  # before anything is recorded or sent
        if record is None:
            record = _begin(shadow, mode, condition, topics, bootstrap, source, channels)
        elif mode == "replay" and "offsets" not in record:  # begun by an older ecst
            record.update(_replay_range(bootstrap, topics))
        run = _Run(shadow, config, bootstrap, record, progress, mode, condition)
        if record["phase"] == "starting":
            _trigger(mode, record, source, channels, bootstrap)
            record["phase"] = "snapshotting"
            shadow.save_rebuild_record(record)
        if mode == "replay":  # to the end offsets taken at start: `until` (or later ones, which the
            # runner reaches past any trailing transaction markers: `until_caught_up`)
            run.consumer.policy.until = run.reached
            run.consumer.run(until_caught_up=True, on_batch=run.on_batch)
        elif mode == "incremental":
            assert channels is not None and source is not None
            follower = _Notifications(bootstrap, channels.require_notifications(), record, source)
            try:
                run.consumer.policy.until = follower.completed
                run.consumer.run(on_batch=run.on_batch)
            finally:
                follower.close()
                run.consumer.policy.until = None
            run.consumer.run(until_caught_up=True, on_batch=run.on_batch)  # what was sent before
        else:
            assert source is not None
            deadline = time.monotonic() + START_TIMEOUT_S
            watch = _Watch(source, mode)
            run.consumer.policy.until = lambda: _not_started(run.consumer, topics, deadline, mode, watch)
            run.consumer.run(until_ready=True, on_batch=run.on_batch)
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
        live.close()
        shadow.close()


# --------------------------------------------------------------------------------------------
def _open(shadow: StateStore, mode: str, condition: str | None, restart: bool) -> dict | None:
    """The rebuild to resume, if any; refuses to mix modes."""
    record = shadow.rebuild_record()
    if restart:
        shadow.discard()
        return None
    if record is None:
        if shadow.tables() or shadow.stored_offsets():
            if mode == "replay":  # a shadow without a record (an older ecst): resume the replay
                return {"mode": "replay", "phase": "snapshotting", "condition": None,
                        "rows_applied": 0, "rows_expected": 0, "started_at": time.time()}
            raise RebuildError("a shadow copy without bookkeeping exists: re-run with --restart")
        return None
    if (record["mode"], record.get("condition")) != (mode, condition):
        what = record["mode"] + (f" --where {record['condition']!r}" if record.get("condition") else "")
        raise RebuildError(f"a {what} rebuild is in progress since "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record['started_at']))}: "
                           f"run `ecst rebootstrap {what}` to resume it, or add --restart to discard it")
    return record


Offsets = dict[tuple[str, int], int]  # (topic, partition) -> offset


def _offsets(bootstrap: str, topics: list[str]) -> tuple[Offsets, Offsets]:
    """(beginning, end) offsets of every partition of `topics` (empty for a missing topic)."""
    probe = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(probe.partitions_for_topic(t) or ())]
        if not tps:
            return {}, {}
        begins, ends = probe.beginning_offsets(tps), probe.end_offsets(tps)
        return ({(tp.topic, tp.partition): o for tp, o in begins.items()},
                {(tp.topic, tp.partition): o for tp, o in ends.items()})
    finally:
        probe.close()


def _replay_range(bootstrap: str, topics: list[str]) -> dict[str, Any]:
    """What a replay reads: each partition from its beginning to its end offset of now, and the
    offsets that spans (its progress total)."""
    begins, ends = _offsets(bootstrap, topics)
    return {"offsets": [[t, p, begins[(t, p)], end] for (t, p), end in sorted(ends.items())],
            "rows_expected": sum(end - begins[tp] for tp, end in ends.items()), "unit": "offsets"}


def _estimate(source: SnapshotSource | None, tables: list[str]) -> int:
    """The planner's estimate of the tables' rows (a progress total; 0: unknown)."""
    if source is None or source.producer is None:
        return 0
    from ecst.verify import estimate_rows

    try:
        with source.producer() as conn:
            return sum(estimate_rows(conn, t) for t in tables)
    except Exception as exc:  # an estimate only: the rebuild does not depend on it
        log.warning("no row estimate from the producer database (%s)", exc)
        return 0


def _begin(shadow: StateStore, mode: str, condition: str | None, topics: list[str], bootstrap: str,
           source: SnapshotSource | None, channels: signals.Channels | None) -> dict[str, Any]:
    record: dict[str, Any] = {"mode": mode, "condition": condition, "phase": "starting",
                              "started_at": time.time(), "rows_applied": 0, "rate": 0.0,
                              "signal_id": signals.new_signal_id(), "notify_from": {}}
    if mode == "replay":
        record.update(_replay_range(bootstrap, topics))
        shadow.begin_rebuild({}, record)
        return record
    assert source is not None and channels is not None
    record["connector"] = source.connector
    record["tables"] = [signals.data_collection(t, channels.prefix) for t in topics]
    # a filtered backfill's total is unknown: ecst never runs the condition (not even in EXPLAIN)
    record["rows_expected"] = 0 if condition else _estimate(source, record["tables"])
    record["unit"] = "rows"
    if mode == "incremental":
        ntopic = channels.require_notifications()
        record["notify_from"] = {str(p): o for (_t, p), o in _offsets(bootstrap, [ntopic])[1].items()}
    start = _offsets(bootstrap, topics)[1]  # {} when the topic is gone (fresh): from its start
    shadow.begin_rebuild(start, record)
    log.info("%s rebuild starts at %s", mode, start)
    return record


def _check(mode: str, source: SnapshotSource, channels: signals.Channels) -> None:
    """Refuse, with the key to set, a rebuild the connector is not configured for."""
    if mode == "incremental":
        channels.require_notifications()
    if mode in ("incremental", "blocking") and channels.choose(source.channel) == "source" \
            and source.producer is None:
        raise ConfigError("the signal-table channel needs the producer database: pass "
                          "--producer-url, or use --channel kafka")
    if mode in ("incremental", "blocking"):  # `fresh` is what recovers a failed connector
        problem = source.problem(wait_s=HEALTHY_WAIT_S)
        if problem is not None:
            raise SnapshotFailedError(f"connector {source.connector!r} cannot take the {mode} snapshot, so "
                                      f"nothing was sent: {problem}")


def _trigger(mode: str, record: dict[str, Any], source: SnapshotSource | None,
             channels: signals.Channels | None, bootstrap: str) -> None:
    if mode == "replay":
        return
    assert source is not None and channels is not None
    config = source.config()
    if mode == "fresh":
        _reset_connector(source, config)
        return
    problem = source.problem()
    if problem is not None:
        raise SnapshotFailedError(f"connector {source.connector!r} cannot take the {mode} snapshot, so "
                                  f"nothing was sent: {problem}")
    signal = signals.SnapshotSignal(record["signal_id"], tuple(record["tables"]), mode,
                                    record.get("condition"))
    channel = channels.choose(source.channel)
    if channel == "source":
        assert channels.signal_table is not None and source.producer is not None  # _check
        with source.producer() as conn:
            signals.send_via_table(conn, channels.signal_table, signal)
    else:
        assert channels.kafka_topic is not None  # the worker's signal.kafka.bootstrap.servers is
        # the same cluster as seen from the worker; ecst produces through its own address
        signals.send_via_kafka(bootstrap, channels.kafka_topic, channels.prefix, signal)
    log.info("sent %s snapshot signal %s through the %s channel", mode, signal.id, channel)


def _reset_connector(source: SnapshotSource, config: dict[str, str]) -> None:
    mode = config.get("snapshot.mode", "initial")
    if mode not in SNAPSHOT_MODES_FOR_FRESH:
        raise RebuildError(f"connector {source.connector!r} has snapshot.mode={mode}: a reset connector "
                           f"would not snapshot; use one of {sorted(SNAPSHOT_MODES_FOR_FRESH)}")
    client, name = source.client, source.connector
    client.stop(name)
    deadline = time.monotonic() + 60
    while source.state() != "STOPPED":
        if time.monotonic() > deadline:
            raise RebuildError(f"connector {name!r} did not stop within 60 s (`ecst connectors status`)")
        time.sleep(0.5)
    slot = config.get("slot.name", "debezium")
    if source.producer is not None:
        from ecst.demo import wait_for_slot_inactive

        with source.producer() as conn:
            wait_for_slot_inactive(conn, slot)
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (slot,))
        log.info("dropped replication slot %s: the connector creates a new one", slot)
    else:
        log.warning("no producer database given: slot %s is kept; the new snapshot then streams "
                    "from the slot's position (duplicates are harmless)", slot)
    client.reset_offsets(name)
    client.resume(name)
    log.info("connector %s reset: it takes a new initial snapshot", name)


class _Run:
    """The shadow consumer of one rebuild, and its progress bookkeeping."""

    def __init__(self, shadow: StateStore, config: ConsumerConfig, bootstrap: str, record: dict[str, Any],
                 progress: Callable[[Progress], None] | None, mode: str, condition: str | None) -> None:
        self.shadow, self.record, self.callback, self.mode = shadow, record, progress, mode
        self.base = int(record.get("rows_applied", 0))
        self.rows = _SnapshotRows(condition is not None) if mode != "replay" else None
        # a replay reads each partition from its beginning to its end offset of the start
        self.range = {(t, p): (b, e) for t, p, b, e in record.get("offsets", [])}
        unit = "offsets" if mode == "replay" else "rows"
        self.progress = Progress(self.base, int(record.get("rows_expected", 0)), time.monotonic(), unit)
        # a snapshot mode knows completion from the snapshot itself, never from a caught-up replay
        self.consumer = Consumer(shadow, config=config.with_(group_id=f"{config.group_id}-rebuild"),
                                 bootstrap_servers=bootstrap,
                                 policy=RebuildPolicy(accept=self.rows,
                                                      cold_start_completes=mode == "replay"))
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

    def reached(self) -> bool:
        """For `until=`: the replay has read every partition to the end offset of its start."""
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
            self.record["rows_applied"] = self.progress.done
            self.record["rate"] = round(self.progress.rate, 1)
            self.shadow.save_rebuild_record(self.record)


class _SnapshotRows:
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
        if self.only_incremental and not _snapshot_rows_only(event):
            return False
        tp = (event.topic, event.partition)
        if event.offset >= self.read_to.get(tp, 0):
            self.read_to[tp] = event.offset + 1
            self.count += event.op == "r"
        return True


def _snapshot_rows_only(event: ChangeEvent) -> bool:
    return event.op == "r" and event.snapshot == "incremental"


class _Watch:
    """Checks the connector's tasks every WATCH_EVERY_S while a rebuild waits for its snapshot:
    a FAILED task will not deliver it."""

    def __init__(self, source: SnapshotSource, mode: str) -> None:
        self.source, self.mode = source, mode
        self.next = time.monotonic() + WATCH_EVERY_S

    def __call__(self) -> None:
        if time.monotonic() < self.next:
            return
        self.next = time.monotonic() + WATCH_EVERY_S
        found = self.source.failure()
        if found is not None:
            raise SnapshotFailedError(f"connector {self.source.connector!r} failed during the {self.mode} "
                                      "snapshot, so the rebuild was discarded (the live state is untouched): "
                                      f"{found.message.rstrip('.')}. Next: {found.next}")


def _not_started(consumer: Consumer, topics: list[str], deadline: float, mode: str,
                 watch: _Watch | None = None) -> bool:
    """For `until=`: never stops the run, but fails it when no snapshot began in time, or when
    the connector failed."""
    if watch is not None:
        watch()
    if time.monotonic() > deadline and not any(t in consumer.snapshots for t in topics):
        raise RebuildError(f"no {mode} snapshot started within {START_TIMEOUT_S:.0f} s: check the "
                           "connector (`ecst connectors status`); re-running the same command "
                           "resumes waiting")
    return False


class _Notifications:
    """Follows the notification topic for one incremental snapshot (by signal id), and the
    connector's tasks meanwhile."""

    def __init__(self, bootstrap: str, topic: str, record: dict[str, Any], source: SnapshotSource) -> None:
        self.signal_id = record["signal_id"]
        self.condition = record.get("condition")
        self.tables = list(record.get("tables", []))
        self.source = source
        self.watch = _Watch(source, "incremental")
        self.topic = topic
        self.deadline = time.monotonic() + START_TIMEOUT_S
        self.started = False
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                                      auto_offset_reset="earliest")
        self.start = {int(p): o for p, o in record["notify_from"].items()}
        self.assigned = False

    def _assign(self) -> None:
        parts = self.consumer.partitions_for_topic(self.topic)
        if not parts:
            self.consumer.topics()  # refresh metadata: the topic appears with the first notification
            return
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        for tp in tps:
            self.consumer.seek(tp, self.start.get(tp.partition, 0))
        self.assigned = True

    def completed(self) -> bool:
        if not self.assigned:
            self._assign()
        if self.assigned:
            for messages in self.consumer.poll(timeout_ms=0).values():
                for m in messages:
                    n = signals.parse_notification(m.value)
                    if n is None or n.id != self.signal_id:
                        continue
                    self.started = True
                    log.info("incremental snapshot %s: %s %s", n.id, n.type, n.data)
                    failure = n.scan_failure()
                    if failure is not None:
                        raise SnapshotFailedError(self._rejected(n, failure))
                    if n.type == signals.ABORTED:
                        raise SnapshotFailedError(f"Debezium aborted incremental snapshot {n.id} (a "
                                                  "stop-snapshot signal, or see the connector's log); "
                                                  f"{self._nothing()}, run the command again")
                    if n.type == signals.COMPLETED:
                        return True
        self.watch()
        if not self.started and time.monotonic() > self.deadline:
            raise RebuildError(f"the connector did not start snapshot {self.signal_id} within "
                               f"{START_TIMEOUT_S:.0f} s: is it RUNNING, and does it watch the signal "
                               "channel? (`ecst connectors status`, `ecst connectors doctor`); re-running "
                               "the same command resumes waiting")
        return False

    def _nothing(self) -> str:
        done = "nothing was merged" if self.condition else "nothing was swapped in"
        return f"{done} and the rebuild was discarded (the live state is untouched)"

    def _rejected(self, n: signals.Notification, failure: str) -> str:
        """The error for a table scan Debezium ended without reading the table."""
        detail = ""
        if n.data.get("status") == "SQL_EXCEPTION":
            found = None
            if self.source.connect_log is not None:
                found = health.postgres_error_in_log(self.source.connect_log, self.tables)
            detail = f" (Postgres: {found})" if found else " (Postgres's message is in Kafka Connect's log)"
        fix = (f"correct --where {self.condition!r} and run the command again" if self.condition
               else "fix the cause, then run the command again")
        return f"Debezium rejected incremental snapshot {n.id}: {failure}{detail}; {self._nothing()}; {fix}"

    def close(self) -> None:
        self.consumer.close()


def _finish(live: StateStore, shadow: StateStore, run: _Run, started: float, resumed: bool,
            topics: list[str]) -> RebuildResult:
    record = run.record
    result = RebuildResult([], run.consumer.stats.records, {}, {}, 0.0, resumed, record["mode"],
                           run.progress.done if record["mode"] != "replay" else 0)
    if record.get("condition"):
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
    live.save_rebuild_record({**record, "phase": "complete", "finished_at": time.time(),
                              "result": result.as_dict()})
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

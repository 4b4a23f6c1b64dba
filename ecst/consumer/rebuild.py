"""Re-bootstrap by replaying the compacted topic into a shadow copy, then swapping it in.

The live tables keep serving (and a live consumer keeps applying changes to them) while the
rebuild writes `ecst_shadow__<table>` from the topic's beginning with its own offsets. Once the
replay has reached the end offsets taken when it started, `StateStore.promote` replaces the live
tables and bookkeeping in one transaction; a live consumer notices the new generation before its
next write and continues from the shadow's offsets. A crashed rebuild resumes from the shadow's
stored offsets. Zero load on the producer database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from ecst.consumer.config import ConsumerConfig
from ecst.consumer.runner import Consumer
from ecst.consumer.store import ApplyStats, StateStore

SHADOW = "ecst_shadow__"


@dataclass
class Progress:
    """How far a rebuild is: records read out of records expected, and the rate."""

    done: int
    expected: int
    started: float

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    @property
    def eta_s(self) -> float | None:
        return (self.expected - self.done) / self.rate if self.rate > 0 and self.done else None

    def line(self, width: int = 30) -> str:
        frac = min(1.0, self.done / self.expected) if self.expected else 1.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        eta = f", ETA {self.eta_s:.0f} s" if self.eta_s is not None else ""
        return f"[{bar}] {self.done:,}/{self.expected:,} records ({frac:.0%}), {self.rate:,.0f}/s{eta}"


@dataclass
class RebuildResult:
    """The summary of a rebuild."""

    tables: list[str]
    records: int
    rows_before: dict[str, int]
    rows_after: dict[str, int]
    seconds: float
    resumed: bool

    def summary(self) -> str:
        parts = []
        for t in self.tables:
            before, after = self.rows_before.get(t, 0), self.rows_after.get(t, 0)
            parts.append(f"{t}: {after:,} rows (was {before:,})")
        how = "resumed and finished" if self.resumed else "finished"
        return (f"rebuild {how}: {self.records:,} records replayed in {self.seconds:.1f} s; "
                + "; ".join(parts))


def _expected(bootstrap: str, topics: list[str], start: dict[tuple[str, int], int]) -> int:
    probe = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(probe.partitions_for_topic(t) or ())]
        ends, begins = probe.end_offsets(tps), probe.beginning_offsets(tps)
        return sum(max(0, ends[tp] - max(begins[tp], start.get((tp.topic, tp.partition), 0))) for tp in tps)
    finally:
        probe.close()


def replay(state_url: str, config: ConsumerConfig, bootstrap: str, *,
           progress: Callable[[Progress], None] | None = None) -> RebuildResult:
    """Rebuild every mapped topic's state from the topic, in a shadow copy, then swap it in."""
    started = time.monotonic()
    live = StateStore(state_url)
    shadow = StateStore(state_url, namespace=SHADOW)
    stored = shadow.stored_offsets()
    resumed = bool(stored)
    topics = [m.topic for m in config.topics]
    state = Progress(0, _expected(bootstrap, topics, stored), time.monotonic())
    consumer = Consumer(shadow, config=config.with_(group_id=f"{config.group_id}-rebuild"),
                        bootstrap_servers=bootstrap)

    def on_batch(_stats: ApplyStats) -> None:
        state.done = consumer.stats.records
        if progress is not None:
            progress(state)

    try:
        consumer.run(until_caught_up=True, on_batch=on_batch)
        for topic in topics:  # the replay reached the end: a complete copy, markers or not
            shadow.mark_snapshot_complete(topic)
        rows_before = {t: _count(live, t) for t in shadow.tables()}
        tables = live.promote(shadow)
        rows_after = {t: _count(live, t) for t in tables}
    finally:
        live.close()
        shadow.close()
    return RebuildResult(tables, consumer.stats.records, rows_before, rows_after,
                         time.monotonic() - started, resumed)


def _count(store: StateStore, table: str) -> int:
    if not store.has_table(table):
        return 0
    from sqlalchemy import func, select

    t = store.load_table(table)
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t)).scalar_one()

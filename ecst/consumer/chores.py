"""The consumer loop's periodic chores, after each turn: the readiness and snapshot gauges,
every few seconds a rebuild's progress and the topics' presence, and every ten minutes the
purge of delete tombstones older than their retention."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping

from ecst.consumer import readiness
from ecst.consumer.metrics import Metrics
from ecst.consumer.readers import Reader
from ecst.consumer.snapshots import SnapshotState
from ecst.consumer.store import StateStore

log = logging.getLogger(__name__)
PURGE_EVERY_S = 600.0
CHECK_EVERY_S = 5.0  # how often a rebuild's progress and the topics' presence are looked at
REBUILD_MODES = ("replay", "incremental", "blocking", "fresh")


class Chores:
    """Gauges and housekeeping for one consumer of `store`."""

    def __init__(self, store: StateStore, metrics: Metrics, topics: list[str],
                 tombstone_retention_hours: float) -> None:
        self.store = store
        self.metrics = metrics
        self.topics = topics
        self.retention = dt.timedelta(hours=tombstone_retention_hours)
        self._last_purge = 0.0
        self._last_check = 0.0

    def after_turn(self, group: Reader, snapshots: Mapping[str, SnapshotState], ready: bool) -> None:
        group.observe(self.metrics)
        for t in self.topics:
            self.metrics.set("ecst_snapshot_complete",
                             1.0 if readiness.snapshot_applied([t], snapshots) else 0.0, topic=t)
        self.metrics.set("ecst_ready", 1.0 if ready else 0.0)
        now = time.monotonic()
        if now - self._last_check >= CHECK_EVERY_S:
            self._last_check = now
            self.observe_rebuild()
            group.check_topics(self.metrics)
        if now - self._last_purge >= PURGE_EVERY_S:
            self._last_purge = now
            self.purge()

    def observe_rebuild(self) -> None:
        """Export the progress of a rebuild of this state (run by `ecst rebootstrap` in another
        process, which records it in the shadow's bookkeeping) as gauges."""
        doc = self.store.rebuild_in_progress() if not self.store.ns else None
        for mode in REBUILD_MODES:
            running = doc is not None and doc.get("mode") == mode
            self.metrics.set("ecst_rebuild_in_progress", 1.0 if running else 0.0, mode=mode)
        self.metrics.set("ecst_rebuild_rows_applied", float(doc["rows_applied"]) if doc else 0.0)
        self.metrics.set("ecst_rebuild_rows_expected", float(doc["rows_expected"]) if doc else 0.0)
        self.metrics.set("ecst_rebuild_rows_per_second", float(doc.get("rate", 0.0)) if doc else 0.0)

    def purge(self) -> None:
        """Drop delete tombstones older than the retention (`tombstone_retention_hours`)."""
        cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None) - self.retention
        purged = self.store.purge_tombstones(cutoff)
        if purged:
            log.info("purged %d delete tombstones older than %s", purged, cutoff)

"""How a snapshot-based rebuild waits for its snapshot: started in time, connector alive, complete."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ecst.connectors import health, signals
from ecst.connectors.notifications import NotificationFollower
from ecst.connectors.snapshot_source import SnapshotSource
from ecst.exceptions import RebuildError, SnapshotFailedError

if TYPE_CHECKING:
    from ecst.consumer.runner import Consumer

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a snapshot the connector has not started by then is reported
WATCH_EVERY_S = 5.0  # how often the connector's tasks are checked while a rebuild waits


class ConnectorWatch:
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


class SnapshotStart:
    """The rebuild policy's `until` while a blocking or fresh snapshot is awaited (the run itself
    ends when the snapshot is applied): never stops the run, but fails it when no snapshot began within
    START_TIMEOUT_S, or when the connector failed."""

    def __init__(self, consumer: Consumer, topics: list[str], mode: str, watch: ConnectorWatch) -> None:
        self.consumer, self.topics, self.mode, self.watch = consumer, topics, mode, watch
        self.deadline = time.monotonic() + START_TIMEOUT_S

    def __call__(self) -> bool:
        self.watch()
        if time.monotonic() > self.deadline and not any(t in self.consumer.snapshots for t in self.topics):
            raise RebuildError(f"no {self.mode} snapshot started within {START_TIMEOUT_S:.0f} s: check the "
                               "connector (`ecst connectors status`); re-running the same command "
                               "resumes waiting")
        return False


class IncrementalCompletion:
    """The rebuild policy's `until` while an incremental snapshot is awaited: True once Debezium reports it
    COMPLETED (by signal id). A scan Debezium ended with an error, an aborted snapshot, a failed
    connector task, or no start within START_TIMEOUT_S fail the run."""

    def __init__(self, follower: NotificationFollower, source: SnapshotSource, condition: str | None,
                 tables: list[str]) -> None:
        self.follower, self.source, self.condition, self.tables = follower, source, condition, tables
        self.signal_id = follower.signal_id
        self.watch = ConnectorWatch(source, "incremental")
        self.deadline = time.monotonic() + START_TIMEOUT_S
        self.started = False

    def __call__(self) -> bool:
        for n in self.follower.poll():
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
        self.follower.close()

"""A connector's health as an operator needs it: a failed task's trace in one line, the problem it
shows (a lost replication slot, or another failure) and the next command to run.

Kafka Connect reports a connector RUNNING while its only task is FAILED, so every check here looks
at the tasks too. Used by `ecst connectors status` and `doctor`, and by `ecst rebootstrap` before it
signals a connector and while it waits for a snapshot. The procedures are in docs/runbook.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecst.connectors.client import ConnectClient

SLOT_LOST, TASK_FAILED = "slot_lost", "task_failed"
RUNBOOK = "docs/runbook.md"
# Debezium's words when the position in its offsets is gone from the server (the slot was dropped,
# or re-created after the connector last read it), and Postgres's when the slot is missing or was
# invalidated (it exceeded max_slot_wal_keep_size).
_SLOT_GONE = re.compile(r"no longer available on the server|replication slot \"[^\"]*\" does not exist"
                        r"|can no longer get changes from replication slot")
# Debezium's incremental-snapshot race (DBZ-8674): a snapshot signal read from the Kafka channel has
# its first chunk run on the signal thread while the streaming thread reads the same snapshot state;
# when that chunk ends the snapshot (a filter Postgres rejected, or one matching no rows), the
# streaming thread can find no current table and fail the task.
_SNAPSHOT_RACE = re.compile(
    r"NullPointerException.{0,400}IncrementalSnapshotContext\.currentDataCollectionId", re.S)
# The same failure at the task's start: its offsets hold an incremental snapshot in progress (one the
# race left there, say) whose query Postgres rejects; Debezium resumes it at every start, so a restart
# can fail again.
_SNAPSHOT_AT_START = re.compile(r"AbstractIncrementalSnapshotChangeEventSource\.init\(")


def _elide_dumps(text: str, longest: int = 80) -> str:
    """`[…]` for every outermost bracketed part longer than `longest` (Debezium's state dumps)."""
    out, depth, opened = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            if depth == 0:
                opened = i
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
            if depth == 0:
                part = text[opened:i + 1]
                out.append("[…]" if len(part) > longest else part)
            continue
        if depth == 0:
            out.append(ch)
    if depth:  # unclosed: keep the rest as it is
        out.append(text[opened:])
    return "".join(out)


def trace_summary(trace: str | None, limit: int = 400) -> str:
    """One line from a Java stack trace: the exception and its message, and the root cause when
    there is one; long state dumps (`PostgresOffsetContext [...]`) are elided."""
    if not trace or not trace.strip():
        return "no trace"
    lines = [line.strip() for line in trace.strip().splitlines()]
    head = lines[0]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by: ")]
    text = _elide_dumps(head if not causes or causes[-1] in head else f"{head} (caused by {causes[-1]})")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Task:
    """One task of a connector, as Connect's status reports it."""

    id: int
    state: str
    worker: str | None = None
    trace: str | None = None

    @property
    def summary(self) -> str | None:
        return trace_summary(self.trace) if self.state == "FAILED" else None


def tasks_of(status: dict[str, Any]) -> list[Task]:
    return [Task(int(t.get("id", 0)), str(t.get("state", "UNKNOWN")), t.get("worker_id"), t.get("trace"))
            for t in status.get("tasks", [])]


@dataclass(frozen=True)
class Diagnosis:
    """What is wrong with a connector (`problem`: SLOT_LOST or TASK_FAILED), in one line, and the
    next step, in one line."""

    problem: str
    message: str
    next: str

    def as_dict(self) -> dict[str, str]:
        return {"problem": self.problem, "message": self.message, "next": self.next}


def snapshot_race_step(name: str) -> str:
    return (f"the connector's config needs no fix: `ecst connectors restart {name} --failed-only` (if the "
            f"task then fails at its start, `ecst connectors offsets drop-snapshot {name}`); if a rebuild's "
            "--where was rejected, correct it; run rebuilds with the producer database reachable "
            "(--producer-url or ECST_PRODUCER_URL), so that their signal goes through the signal table "
            f"({RUNBOOK}, \"Connector task failed\")")


def held_snapshot_step(name: str) -> str:
    return (f"a restart can fail the same way: `ecst connectors offsets drop-snapshot {name}` (it stops, "
            "forgets that snapshot, keeps its streaming position and resumes); run the rebuild again with "
            f"a --where Postgres accepts ({RUNBOOK}, \"Connector task failed\")")


def slot_lost_step(name: str) -> str:
    return ("the changes made since the connector last read its slot can no longer be streamed: rebuild "
            f"from a new snapshot on a new slot, `ecst rebootstrap fresh -c <consumer config> --connector "
            f"{name}` ({RUNBOOK}, \"Replication slot lost\")")


def diagnose(name: str, status: dict[str, Any], slot: str | None = None, slot_exists: bool | None = None,
             has_offsets: bool | None = None) -> Diagnosis | None:
    """The problem Connect's `status` of connector `name` shows, if any. `slot_exists` (None:
    unknown) and `has_offsets` (the connector streamed before) tell a lost slot apart from one
    the connector has not created yet."""
    failed = [t for t in tasks_of(status) if t.state == "FAILED"]
    connector = status.get("connector") or {}
    lost = slot_exists is False and bool(has_offsets)
    if failed:
        t = failed[0]
        what = f"task {t.id} is FAILED: {t.summary}"
        if lost or any(_SLOT_GONE.search(f.trace or "") for f in failed):
            where = f"replication slot {slot} is gone" if slot else "its replication slot is gone"
            return Diagnosis(SLOT_LOST, f"{where}; {what}", slot_lost_step(name))
        if any(_SNAPSHOT_RACE.search(f.trace or "") for f in failed):
            if any(_SNAPSHOT_AT_START.search(f.trace or "") for f in failed):
                held = ("at every start, Debezium resumes an incremental snapshot the connector's offsets "
                        "hold, and Postgres rejects its query")
                return Diagnosis(TASK_FAILED, f"{what}: {held}", held_snapshot_step(name))
            race = "Debezium's incremental-snapshot race (DBZ-8674), met by a signal sent through Kafka"
            return Diagnosis(TASK_FAILED, f"{what}: {race}", snapshot_race_step(name))
        return Diagnosis(TASK_FAILED, what, f"fix the cause (the whole trace: `ecst connectors status {name} "
                         "-o json`; `ecst connectors doctor -f <file>` checks the producer database), then "
                         f"`ecst connectors restart {name} --failed-only`, or, for a fix in the connector's "
                         f"YAML, `ecst connectors apply -f <file>` ({RUNBOOK}, \"Connector task failed\")")
    if connector.get("state") == "FAILED":
        return Diagnosis(TASK_FAILED, f"the connector is FAILED: {trace_summary(connector.get('trace'))}",
                         f"fix the cause, then `ecst connectors restart {name}` ({RUNBOOK}, "
                         "\"Connector task failed\")")
    if lost:
        return Diagnosis(SLOT_LOST, f"replication slot {slot} does not exist, but the connector's offsets "
                         "point into it: it was dropped or lost", slot_lost_step(name))
    return None


@dataclass(frozen=True)
class Deployment:
    """A connector as Kafka Connect knows it: deployed or not, its status, and whether it has
    source offsets (it streamed before, so its slot should exist)."""

    exists: bool
    status: dict[str, Any] = field(default_factory=dict)
    has_offsets: bool = False

    @classmethod
    def read(cls, client: ConnectClient, name: str) -> Deployment:
        """Read-only: GET status and offsets (ConnectError when Connect cannot be reached)."""
        status = client.status(name)
        if status is None:
            return cls(False)
        return cls(True, status, bool((client.offsets(name) or {}).get("offsets")))


def postgres_error_in_log(log_file: Path, tables: list[str], max_bytes: int = 4 << 20) -> str | None:
    """Postgres's error for the latest snapshot Debezium was asked to take of `tables`, from a
    Kafka Connect worker's log (the local stack's): Debezium's notification says only that the
    table scan ended with SQL_EXCEPTION. None when the log or the error is not found."""
    try:
        with log_file.open("rb") as f:
            f.seek(max(0, log_file.stat().st_size - max_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    requested = re.compile(r"Requested '\w+' snapshot of data collections '\[(?P<tables>[^\]]*)\]'")
    start = None
    for i, line in enumerate(lines):
        m = requested.search(line)
        if m and set(tables) <= {t.strip() for t in m.group("tables").split(",")}:
            start = i
    if start is None:
        return None
    named = re.compile("|".join(rf"(?<![\w.]){re.escape(t)}(?![\w.])" for t in tables))
    for i in range(start + 1, len(lines)):
        m = re.search(r"PSQLException: (ERROR: .*)$", lines[i])
        # the error line follows Debezium's own, which names the table (a shared worker logs
        # every connector's errors)
        if m and named.search(lines[i - 1] + lines[i]):
            return m.group(1).strip()
    return None

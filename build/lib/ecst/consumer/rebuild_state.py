"""A rebuild's bookkeeping (`RebuildState`, stored with its shadow), its resume rules, and its result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from ecst.consumer.store import StateStore
from ecst.exceptions import RebuildError

STARTING, SNAPSHOTTING, COMPLETE = "starting", "snapshotting", "complete"  # phases


class PartitionRange(NamedTuple):
    """What a replay reads of one partition: from `begin` to `end` (the end offset at its start)."""

    topic: str
    partition: int
    begin: int
    end: int


# Keys written only when set (a record of an older ecst, or of another mode, may lack them).
_OPTIONAL = ("unit", "signal_id", "connector", "tables", "offsets", "finished_at", "result")


@dataclass
class RebuildState:
    """The bookkeeping of one rebuild, stored with its shadow (`StateStore.save_rebuild_record`)
    so the same command resumes it after a crash; once swapped in, the live state keeps the last
    one (phase `complete`, with `finished_at` and `result`), for `ecst status`.

    The stored JSON is the dict of `to_dict`: the keys ecst has always written (a rebuild left in
    progress by an older ecst resumes), each optional one only when set; keys this ecst does not
    know are kept as they are (`extra`)."""

    mode: str
    condition: str | None = None
    phase: str = STARTING
    started_at: float = field(default_factory=time.time)
    rows_applied: int = 0  # replay: offsets
    rows_expected: int = 0  # 0: unknown
    rate: float = 0.0  # rows (offsets) per second, on average since the start
    notify_from: dict[int, int] = field(default_factory=dict)  # incremental: notification offsets
    unit: str | None = None  # "rows" (snapshot modes) or "offsets" (replay)
    signal_id: str | None = None
    connector: str | None = None  # snapshot modes
    tables: list[str] | None = None  # snapshot modes: the signal's data collections
    offsets: list[PartitionRange] | None = None  # replay
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RebuildState:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in doc.items() if k in known}
        values["notify_from"] = {int(p): int(o) for p, o in (doc.get("notify_from") or {}).items()}
        if doc.get("offsets") is not None:
            values["offsets"] = [PartitionRange(str(t), int(p), int(b), int(e))
                                 for t, p, b, e in doc["offsets"]]
        if doc.get("tables") is not None:
            values["tables"] = list(doc["tables"])
        return cls(**values, extra={k: v for k, v in doc.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            **self.extra, "mode": self.mode, "condition": self.condition, "phase": self.phase,
            "started_at": self.started_at, "rows_applied": self.rows_applied,
            "rows_expected": self.rows_expected, "rate": self.rate,
            "notify_from": {str(p): o for p, o in self.notify_from.items()}}
        for key in _OPTIONAL:
            value = getattr(self, key)
            if value is not None:
                doc[key] = [list(r) for r in value] if key == "offsets" else value
        return doc

    def describe(self) -> str:
        """The mode as the command that resumes it spells it, e.g. `incremental --where 'id < 5'`."""
        return self.mode + (f" --where {self.condition!r}" if self.condition else "")


def open_rebuild(shadow: StateStore, mode: str, condition: str | None, restart: bool) -> RebuildState | None:
    """The rebuild to resume, if any (None: start one); with `restart`, the unfinished one is
    discarded. Refuses to resume a rebuild of another mode or condition."""
    doc = shadow.rebuild_record()
    if restart:
        shadow.discard()
        return None
    if doc is None:
        if shadow.tables() or shadow.stored_offsets():
            if mode == "replay":  # a shadow without a record (an older ecst): resume the replay
                return RebuildState("replay", None, SNAPSHOTTING)
            raise RebuildError("a shadow copy without bookkeeping exists: re-run with --restart")
        return None
    state = RebuildState.from_dict(doc)
    if (state.mode, state.condition) != (mode, condition):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.started_at))
        what = state.describe()
        raise RebuildError(f"a {what} rebuild is in progress since {since}: run `ecst rebootstrap {what}` "
                           "to resume it, or add --restart to discard it")
    return state


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

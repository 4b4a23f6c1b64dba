"""When is the copy ready? Readiness, caught-up and cold-start decisions, as pure functions.

The consumer loop gathers the facts (stored offsets, positions, snapshot states, which topics
streamed changes) and these functions decide; nothing here reads Kafka or the database.
Offsets are keyed by `(topic, partition)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ecst.consumer.snapshots import SNAPSHOT_COMPLETE, SNAPSHOT_PENDING, SnapshotState
from ecst.consumer.topicwait import waiting_reason

Offsets = Mapping[tuple[str, int], int]


def snapshot_applied(topics: Iterable[str], snapshots: Mapping[str, SnapshotState]) -> bool:
    """True once the snapshot of every topic has been completely applied."""
    return all(t in snapshots and snapshots[t].state == SNAPSHOT_COMPLETE for t in topics)


def not_ready_reason(policy: str, *, store_up: bool, caught_up_once: bool,
                     topics: Iterable[str], snapshots: Mapping[str, SnapshotState],
                     missing: Sequence[str] = ()) -> str | None:
    """Why /readyz answers 503 under `policy` (`snapshot`, `caught-up` or `always`), or None
    when ready. Never ready while the state store is unavailable, nor while a topic is `missing`
    (the consumer waits for it to be created)."""
    if not store_up:
        return "state store unavailable"
    if missing:
        return waiting_reason(list(missing))
    if policy == "always":
        return None
    if policy == "caught-up":
        return None if caught_up_once else "end offsets of start-up not reached yet"
    return None if snapshot_applied(topics, snapshots) else "snapshot not applied"


def empty_at_start(topics: Iterable[str], beginnings: Offsets, ends: Offsets) -> set[str]:
    """The topics that held no record at all when the run started (e.g. their connector's task
    failed before writing anything): `ecst consume` says so."""
    return {t for t in topics
            if all(beginnings.get(tp, 0) >= end for tp, end in ends.items() if tp[0] == t)}


def caught_up(targets: Offsets, beginnings: Offsets, progress: Offsets) -> bool:
    """Has every partition's progress (the larger of its stored offset and its position)
    reached the end offset it had at start? Partitions that held nothing are skipped."""
    return all(progress.get(tp, 0) >= end for tp, end in targets.items()
               if beginnings.get(tp, 0) < end)


def snapshots_done(snapshots: Mapping[str, SnapshotState], stored: Offsets) -> list[str]:
    """The topics whose pending snapshot is now completely applied: every partition's stored
    offset reached the end offsets recorded when the snapshot's `last` marker was read."""
    return [topic for topic, snap in snapshots.items() if snap.state == SNAPSHOT_PENDING
            and all(stored.get((topic, p), 0) >= end for p, end in snap.targets.items())]


def cold_topics(topics: Iterable[str], stored: Offsets, *, enabled: bool = True) -> list[str]:
    """The topics started without stored offsets (a cold start), not decided yet."""
    return [t for t in topics if enabled and not any(k[0] == t for k in stored)]


def cold_start_outcome(undecided: Iterable[str], snapshots: Mapping[str, SnapshotState],
                       streamed: set[str]) -> tuple[list[str], list[str]]:
    """Decide the cold-started topics once the run caught up: (complete, still undecided).

    A topic replayed from its beginning to the end offsets of its start, without meeting any
    snapshot marker but meeting streamed changes, holds a complete copy: Debezium streams only
    after its initial snapshot, and compaction removed the markers because later changes
    replaced their keys. A topic with only snapshot rows so far (a snapshot in progress, whose
    `first` may sit in a partition not read yet) or with a marker waits: the markers decide."""
    complete: list[str] = []
    waiting: list[str] = []
    for topic in undecided:
        if topic in snapshots:
            continue  # markers seen: the normal path decides
        (complete if topic in streamed else waiting).append(topic)
    return complete, waiting

"""When is a Debezium snapshot completely applied? Pure bookkeeping over snapshot markers.

All rows of one snapshot carry the snapshot's position, which identifies it. Its `first` and
`last` markers can be read in either order, since they may sit in different partitions. A
`last` makes the snapshot pending until every partition reaches the end offsets of that
moment (the snapshot's other rows may sit in partitions not yet read that far); a `first` of a
snapshot that is already pending or complete changes nothing.

Once a topic's copy is complete it stays complete: streaming keeps it current, so a later
snapshot (a blocking snapshot, a connector reset) must not take the service out of readiness.
A rebuild follows that later snapshot in its own shadow copy, which starts with no state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ecst.consumer.events import ChangeEvent

SNAPSHOT_RUNNING, SNAPSHOT_PENDING, SNAPSHOT_COMPLETE = "running", "pending", "complete"
FIRST_MARKERS = frozenset({"first", "first_in_data_collection"})
LAST_MARKERS = frozenset({"last", "last_in_data_collection"})
MARKERS = FIRST_MARKERS | LAST_MARKERS


@dataclass(frozen=True)
class SnapshotState:
    """A topic's latest Debezium snapshot: running, pending (its last record is applied and
    `targets` holds the end offsets each partition must reach), or complete."""

    state: str
    position: int
    targets: dict[int, int] = field(default_factory=dict)


def snapshot_transitions(
    events: Iterable[ChangeEvent],
    known: Mapping[str, SnapshotState],
    end_offsets: Callable[[str], dict[int, int]],
) -> dict[str, SnapshotState]:
    """The new snapshot state of each topic whose markers appear in `events`."""
    firsts: dict[str, int] = {}
    lasts: dict[str, int] = {}
    for e in events:
        if e.position is None:
            continue  # a delete known from a Kafka tombstone alone: never a snapshot marker
        if e.snapshot in FIRST_MARKERS:
            firsts[e.topic] = max(firsts.get(e.topic, -1), e.position)
        elif e.snapshot in LAST_MARKERS:
            lasts[e.topic] = max(lasts.get(e.topic, -1), e.position)
    updates: dict[str, SnapshotState] = {}
    for topic in sorted(firsts.keys() | lasts.keys()):
        current = known.get(topic)
        if current is not None and current.state == SNAPSHOT_COMPLETE:
            continue
        first, last = firsts.get(topic, -1), lasts.get(topic, -1)
        if last >= 0 and last >= first and (current is None or last >= current.position):
            updates[topic] = SnapshotState(SNAPSHOT_PENDING, last, end_offsets(topic))
        elif first >= 0 and (current is None or first > current.position):
            updates[topic] = SnapshotState(SNAPSHOT_RUNNING, first)
    return updates

"""Which change is newer: source positions that order Debezium events by commit. Pure.

The rule and the evidence for it are in docs/positions.md. In short:

- `source_order`: the position is the largest of `source.lsn` and the two LSNs of `source.sequence`
  (`[last commit LSN before this event's transaction, this event's LSN]`). Transactions reach the
  stream in commit order, so this orders streamed changes by commit, and puts a snapshot row
  (read at a stream position) between what committed before it and what committed after.
- One gap is left by Debezium itself: the transaction that opens a stream (the first one after a
  snapshot taken on fresh offsets) has no known previous commit, `sequence[0]` is null, and its
  change LSNs can lie *below* the LSN of the snapshot it follows (it wrote before the slot's
  consistent point and committed after it, so the snapshot does not contain it). `commit_order`
  closes the gap: within a partition such an *opening* change ranks at or above every snapshot
  row read before it (the partition's *floor*), which it is newer than.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ecst.consumer import jsontext
from ecst.exceptions import EventError

if TYPE_CHECKING:
    from ecst.consumer.events import ChangeEvent

Partition = tuple[str, int]


def _sequence(source: Mapping[str, Any]) -> list[int | None] | None:
    """`source.sequence` as a list of LSNs (None where Debezium wrote null); None if absent."""
    raw = source.get("sequence")
    if not raw:
        return None
    try:
        parsed = jsontext.loads(raw) if isinstance(raw, str) else raw
        return [None if v is None else int(v) for v in parsed]
    except (ValueError, TypeError) as exc:
        raise EventError(f"source.sequence {raw!r} is not a list of LSNs") from exc


def source_order(op: str, source: Mapping[str, Any]) -> tuple[int, bool, bool]:
    """(position, opening, anchor) of an event with operation `op` and this `source` block.

    position: the largest of `source.lsn`, `sequence[0]` and `sequence[1]`. `source.lsn` alone is
    the LSN of the change record, written when the statement ran, not when its transaction
    committed: a transaction that commits after a snapshot read its row would rank below that
    snapshot row although it is newer. `sequence[0]`, the last commit before the event's
    transaction, is at or above every position of anything committed earlier. Incremental-snapshot
    rows carry no LSN, only the sequence of the moment their chunk was sent.

    opening: a streamed change whose transaction has no known previous commit (`sequence[0]`
    null): the transaction that opens a stream started on fresh offsets, after a snapshot.

    anchor: a snapshot row read at a stream position (`source.lsn` set): an initial, fresh or
    blocking snapshot. Incremental-snapshot rows have no `lsn`.
    """
    lsn = source.get("lsn")
    sequence = _sequence(source)
    values = [int(lsn)] if lsn is not None else []
    values += [v for v in (sequence or ()) if v is not None]
    if not values:
        raise EventError("event has no source position (source.lsn and source.sequence are empty)")
    opening = op != "r" and sequence is not None and len(sequence) > 0 and sequence[0] is None
    anchor = op == "r" and lsn is not None and source.get("snapshot") != "incremental"
    return max(values), opening, anchor


def commit_order(
    events: Sequence[ChangeEvent], floors: Mapping[Partition, int]
) -> tuple[list[ChangeEvent], dict[Partition, int]]:
    """Events (in arrival order) with the positions of opening changes raised to their partition's
    floor, and the floors after them (only those that moved).

    A partition's floor is the highest position of the snapshot rows read from it so far. Every
    opening change sits after its snapshot in the partition (Debezium streams once the snapshot is
    sent), so it is raised to at least that snapshot's position; ties go to the later event.
    """
    current = dict(floors)
    moved: dict[Partition, int] = {}
    out: list[ChangeEvent] = []
    for e in events:
        where = (e.topic, e.partition)
        if e.anchor and e.position is not None and e.position > current.get(where, -1):
            current[where] = moved[where] = e.position
        elif e.opening and e.position is not None and current.get(where, -1) > e.position:
            e = dataclasses.replace(e, position=current[where])
        out.append(e)
    return out, moved

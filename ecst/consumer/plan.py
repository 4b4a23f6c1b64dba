"""Turns a polled batch of change events into the set-based work for one transaction: pure.

Within a batch, several events on one key collapse to the one with the highest source position
(ties: the later offset), so each key is written once. A truncate splits the batch: what came
before it is applied first, then the truncate, then what came after. The upserts of one table are
then grouped by the columns they leave unchanged, one statement per group (`group_by_unchanged`).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ecst.consumer.events import ChangeEvent, materialized
from ecst.consumer.types import UNCHANGED

_KEY_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
_json_string = json.encoder.encode_basestring_ascii


def key_text(key: dict[str, Any]) -> str:
    """A stable text form of a primary key, used for delete tombstones:
    `json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)`, written directly for
    the usual one-column key of an integer or a text (its name needs no escaping)."""
    if len(key) == 1:
        for name, value in key.items():
            if name.__class__ is str and name.isascii() and name.isidentifier():
                if value.__class__ is int:
                    return '{"' + name + '":' + int.__repr__(value) + "}"
                if value.__class__ is str:
                    return '{"' + name + '":' + _json_string(value) + "}"
    return _KEY_ENCODER.encode(key)


@dataclass
class TableChanges:
    """The collapsed changes for one table: one winning event per key."""

    table: str
    latest: dict[str, ChangeEvent] = field(default_factory=dict)

    def add(self, event: ChangeEvent) -> None:
        k = key_text(event.key)
        current = self.latest.get(k)
        if current is None:
            self.latest[k] = event
            return
        if event.op == "d" and event.position is None and current.op == "d":
            return  # the Kafka tombstone that follows a delete event: keep the delete's position
        if current.position is None or event.position is None:
            older, newer = sorted((current, event), key=lambda e: e.offset)  # same partition
        else:
            older, newer = sorted((current, event), key=lambda e: (e.position, e.offset))
        self.latest[k] = _carry_unchanged(older, newer)

    @property
    def upserts(self) -> list[ChangeEvent]:
        return [e for e in self.latest.values() if e.op in "cru"]

    @property
    def deletes(self) -> list[ChangeEvent]:
        return [e for e in self.latest.values() if e.op == "d"]

    def keyed_upserts(self) -> list[tuple[str, ChangeEvent]]:
        """`upserts`, each with the `key_text` of its key (computed once, when it was added)."""
        return [(k, e) for k, e in self.latest.items() if e.op in "cru"]

    def keyed_deletes(self) -> list[tuple[str, ChangeEvent]]:
        """`deletes`, each with the `key_text` of its key."""
        return [(k, e) for k, e in self.latest.items() if e.op == "d"]


def _carry_unchanged(older: ChangeEvent, newer: ChangeEvent) -> ChangeEvent:
    """Collapsing drops `older`; where `newer` says a column is unchanged (TOAST placeholder),
    the value `older` carried is that column's value (decoded, if `older`'s decoding was deferred)."""
    if newer.after is None or older.after is None or newer.deferred is not None:
        return newer  # a deferred row has no placeholder (pg_decode.row_check): nothing to carry
    missing = {c for c, v in newer.after.items() if v is UNCHANGED}
    if not missing:
        return newer
    older = materialized(older)  # its values, decoded: `newer`'s are
    assert older.after is not None
    fill = {c: older.after[c] for c in missing if c in older.after and older.after[c] is not UNCHANGED}
    if not fill:
        return newer
    return dataclasses.replace(newer, after={**newer.after, **fill})


@dataclass
class Step:
    """Either a truncate of one table, or collapsed row changes for several tables."""

    truncate: ChangeEvent | None = None
    tables: dict[str, TableChanges] = field(default_factory=dict)


def plan_batch(events: Iterable[ChangeEvent]) -> list[Step]:
    """Group a batch, in arrival order, into steps; see the module docstring."""
    steps: list[Step] = []
    current = Step()
    for event in events:
        if event.op == "t":
            if current.tables:
                steps.append(current)
            steps.append(Step(truncate=event))
            current = Step()
            continue
        current.tables.setdefault(event.table, TableChanges(event.table)).add(event)
    if current.tables:
        steps.append(current)
    return steps


@dataclass
class RowGroup:
    """Upsert rows that leave the same columns unchanged (TOAST placeholders), so that one
    statement with one SET list writes them all; `ops` counts their events by operation."""

    unchanged: frozenset[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)


def group_by_unchanged(
    events: Iterable[ChangeEvent], columns: Sequence[str], position_column: str
) -> list[RowGroup]:
    """The rows to upsert for `events`, grouped by the columns each leaves unchanged, in order of
    first appearance. Each row has every one of `columns` (None where unchanged; a column absent
    from `after` takes its value from the key, else None) and the event's position under
    `position_column`."""
    groups: dict[frozenset[str], RowGroup] = {}
    for e in events:
        after = e.after or {}
        unchanged = frozenset(c for c, v in after.items() if v is UNCHANGED)
        row = {c: (None if c in unchanged else after.get(c, e.key.get(c))) for c in columns}
        row[position_column] = e.position
        group = groups.setdefault(unchanged, RowGroup(unchanged))
        group.rows.append(row)
        group.ops[e.op] += 1
    return list(groups.values())

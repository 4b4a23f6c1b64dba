"""Turns a polled batch of change events into the set-based work for one transaction: pure.

Within a batch, several events on one key collapse to the one with the highest source position
(ties: the later offset), so each key is written once. A truncate splits the batch: what came
before it is applied first, then the truncate, then what came after.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ecst.consumer.events import ChangeEvent


def key_text(key: dict[str, Any]) -> str:
    """A stable text form of a primary key, used for delete tombstones."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class TableChanges:
    """The collapsed changes for one table: one winning event per key."""

    table: str
    latest: dict[str, ChangeEvent] = field(default_factory=dict)

    def add(self, event: ChangeEvent) -> None:
        k = key_text(event.key)
        current = self.latest.get(k)
        if current is None or (event.position, event.offset) >= (current.position, current.offset):
            self.latest[k] = event

    @property
    def upserts(self) -> list[ChangeEvent]:
        return [e for e in self.latest.values() if e.op in "cru"]

    @property
    def deletes(self) -> list[ChangeEvent]:
        return [e for e in self.latest.values() if e.op == "d"]


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

"""One batch's writes inside its transaction: guarded upserts, deletes with tombstones, truncates, offsets.

An upsert or delete only touches a row whose stored position is not newer than the event's, and
an upsert is dropped when a newer delete tombstone exists for its key. The batch's offsets and
snapshot progress are written by the same writer, in the same transaction.

`BatchWriter` writes with SQLAlchemy Core statements, on any dialect: it is the reference. A
dialect may have a faster writer of its own (writes_sqlite.py, writes_postgres.py) that overrides its
statement-level methods with the same semantics; `writers.py` chooses one per state store.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, func, inspect, select, text
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import StatementError

from ecst.consumer.events import ChangeEvent, materialized
from ecst.consumer.plan import Step, TableChanges, group_by_unchanged
from ecst.consumer.schema import FLOOR, POSITION, Bookkeeping, dialect_insert
from ecst.consumer.snapshots import SNAPSHOT_COMPLETE, SNAPSHOT_PENDING, SnapshotState
from ecst.consumer.tables import StateTables

_CHUNK = 500
Offsets = dict[tuple[str, int], int]  # (topic, partition) -> an offset, or a snapshot floor


@dataclass
class ApplyStats:
    """What one batch did to the state."""

    by_table_op: Counter = field(default_factory=Counter)  # (op, table) -> events written
    stale: int = 0  # of those, rejected as older than the state (guard or delete tombstone)

    @property
    def by_op(self) -> Counter:
        out: Counter = Counter()
        for (op, _table), n in self.by_table_op.items():
            out[op] += n
        return out

    def merge(self, other: ApplyStats) -> None:
        self.by_table_op.update(other.by_table_op)
        self.stale += other.stale


class BatchWriter:
    """Writes the planned steps of one batch (plan.py) and its offsets on an open transaction,
    counting what it did in `stats`; `book` holds the namespace's bookkeeping tables, `now` is
    the batch's timestamp. The reference writer: SQLAlchemy Core statements, for any dialect."""

    def __init__(self, conn: Connection, tables: StateTables, book: Bookkeeping, now: dt.datetime) -> None:
        self.conn = conn
        self.tables = tables
        self.book = book
        self.deleted = book.deleted
        self.now = now
        self.stats = ApplyStats()

    def generation(self) -> int:
        """The live state's current generation, read in this transaction."""
        return self.book.generation(self.conn)

    def save_offsets(self, next_offsets: Offsets, floors: Offsets) -> None:
        """Store the next offset of each partition, and its snapshot floor where it moved."""
        offsets = self.book.offsets
        rows = [{"topic": t, "partition": p, "next_offset": o, "updated_at": self.now,
                 FLOOR: floors.get((t, p))} for (t, p), o in sorted(next_offsets.items())]
        stmt = dialect_insert(self.conn, offsets)
        stmt = stmt.on_conflict_do_update(
            index_elements=["topic", "partition"],
            set_={"next_offset": stmt.excluded.next_offset,
                  "updated_at": stmt.excluded.updated_at,
                  FLOOR: func.coalesce(stmt.excluded[FLOOR], offsets.c[FLOOR])},
        )
        self.conn.execute(stmt, rows)

    def save_snapshot(self, topic: str, snap: SnapshotState) -> None:
        """Store how far `topic`'s snapshot has been applied."""
        stmt = dialect_insert(self.conn, self.book.snapshots)
        stmt = stmt.on_conflict_do_update(
            index_elements=["topic"],
            set_={"state": stmt.excluded.state, POSITION: stmt.excluded[POSITION],
                  "targets": stmt.excluded.targets, "updated_at": stmt.excluded.updated_at},
            where=text(snapshot_guard(self.book.snapshots.name, self.conn.dialect)),
        )
        self.conn.execute(stmt, {"topic": topic, "state": snap.state, POSITION: snap.position,
                                 "updated_at": self.now, "targets": snapshot_targets(snap)})

    takes_deferred = False  # whether `_table` writes rows whose decoding was deferred as they are

    def write(self, step: Step) -> None:
        """A truncate, or the collapsed changes of each table (rows whose decoding was deferred
        decoded first, unless this writer takes them as they are)."""
        if step.truncate is not None:
            self._truncate(step.truncate)
        for changes in step.tables.values():
            self._table(changes if self.takes_deferred else materialized_changes(changes))

    def _table(self, changes: TableChanges) -> None:
        upserts, deletes = changes.keyed_upserts(), changes.keyed_deletes()
        table: Table | None
        if upserts:
            table = self.tables.for_changes(self.conn, changes)
            live = self._not_deleted(changes.table, upserts)
            self._upsert(table, live, [c.name for c in table.primary_key.columns])
        else:  # only deletes; None for a table never created: nothing to delete but tombstones
            table = self.tables.existing(self.conn, changes.table)
        if deletes:
            self._delete(changes.table, table, deletes)

    def _not_deleted(self, table: str, upserts: list[tuple[str, ChangeEvent]]) -> list[ChangeEvent]:
        """The upserts (with their key texts) that no newer delete tombstone stops; the others
        are counted as stale."""
        tomb = self._tombstone_positions(table, [k for k, _ in upserts])
        live = []
        for k, e in upserts:
            assert e.position is not None  # only a tombstone delete has none, never an upsert
            if tomb.get(k, -1) > e.position:
                self.stats.stale += 1
            else:
                live.append(e)
        return live

    def _tombstone_positions(self, table: str, keys: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        d = self.deleted
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            rows = self.conn.execute(
                select(d.c.key, d.c[POSITION]).where(d.c.table_name == table, d.c.key.in_(chunk))
            )
            found.update({k: p for k, p in rows})
        return found

    def _upsert(self, table: Table, events: list[ChangeEvent], key_cols: list[str]) -> None:
        # Rows whose unchanged-TOAST columns differ need different SET lists: one statement each.
        names = [c.name for c in table.columns if c.name != POSITION]
        for group in group_by_unchanged(events, names, POSITION):
            stmt = dialect_insert(self.conn, table)
            set_ = {c: stmt.excluded[c] for c in names if c not in key_cols and c not in group.unchanged}
            set_[POSITION] = stmt.excluded[POSITION]
            stmt = stmt.on_conflict_do_update(
                index_elements=key_cols,
                set_=set_,
                where=table.c[POSITION] <= stmt.excluded[POSITION],
            )
            returning = self.conn.dialect.name == "postgresql"
            # psycopg's executemany ("insertmanyvalues") reports no rowcount: count the rows returned
            result = self.conn.execute(stmt.returning(table.c[POSITION]) if returning else stmt, group.rows)
            written = len(result.all()) if returning else result.rowcount
            for op, n in group.ops.items():
                self.stats.by_table_op[(op, table.name)] += n
            if written is not None and 0 <= written < len(group.rows):
                self.stats.stale += len(group.rows) - written

    def _delete(self, name: str, table: Table | None, keyed: list[tuple[str, ChangeEvent]]) -> None:
        """Deletes (with their key texts): guarded by position unless known only from a Kafka
        tombstone, and recorded as delete tombstones."""
        events = [e for _, e in keyed]
        guarded = [e for e in events if e.position is not None]
        unguarded = [e for e in events if e.position is None]
        if table is not None:
            key_cols = [c.name for c in table.primary_key.columns]
            where_key = and_(*[table.c[c] == bindparam(f"k_{c}") for c in key_cols])
            if guarded:
                self.conn.execute(delete(table).where(where_key, table.c[POSITION] <= bindparam("pos")),
                                  [{**{f"k_{c}": e.key[c] for c in key_cols}, "pos": e.position}
                                   for e in guarded])
            if unguarded:  # deletes known only from Kafka tombstones: offset order is their order
                self.conn.execute(delete(table).where(where_key),
                                  [{f"k_{c}": e.key[c] for c in key_cols} for e in unguarded])
        if guarded:  # a tombstone record, so that a replayed older create cannot resurrect it
            tomb = dialect_insert(self.conn, self.deleted)
            tomb = tomb.on_conflict_do_update(
                index_elements=["table_name", "key"],
                set_={POSITION: tomb.excluded[POSITION], "deleted_at": tomb.excluded.deleted_at},
                where=self.deleted.c[POSITION] <= tomb.excluded[POSITION],
            )
            self.conn.execute(tomb, [{"table_name": name, "key": k, POSITION: e.position,
                                      "deleted_at": self.now} for k, e in keyed if e.position is not None])
        self.stats.by_table_op[("d", name)] += len(events)

    def _truncate(self, event: ChangeEvent) -> None:
        """TRUNCATE in the source: remove every row not newer than the truncate."""
        if not inspect(self.conn).has_table(self.tables.physical(event.table)):
            return
        t = sql_table(self.tables.physical(event.table), sql_column(POSITION))
        self.conn.execute(delete(t).where(t.c[POSITION] <= event.position))
        self.stats.by_table_op[("t", event.table)] += 1


def materialized_changes(changes: TableChanges) -> TableChanges:
    """`changes` with every row whose decoding was deferred decoded in Python (`changes` itself
    when there is none)."""
    if all(e.deferred is None for e in changes.latest.values()):
        return changes
    return TableChanges(changes.table, {k: materialized(e) for k, e in changes.latest.items()})


def snapshot_guard(table: str, dialect: Dialect) -> str:
    """The WHERE of the snapshot-state upsert (snapshot table `table`): a stored state is replaced
    only by what `snapshots.snapshot_transitions` would have made of it, never moved back.

    The consumer computes a batch's transition from the state it read before its transaction, and
    members of a group sharing one state commit in any order: a member that read a snapshot's
    `first` may commit after another made that snapshot pending (its `last`) or complete. Without
    the guard its stale "running" replaced "pending" and the copy never became complete. So: a
    complete state stays; otherwise a newer snapshot (higher position) replaces it, and so does
    "pending" at the same position (its targets)."""
    q = dialect.identifier_preparer.quote
    name, pos = q(table), q(POSITION)
    return (f"{name}.state <> '{SNAPSHOT_COMPLETE}' AND (excluded.{pos} > {name}.{pos} OR "
            f"(excluded.{pos} = {name}.{pos} AND excluded.state = '{SNAPSHOT_PENDING}'))")


def snapshot_targets(snap: SnapshotState) -> str:
    """The stored form of a snapshot's target offsets."""
    return json.dumps({str(p): o for p, o in snap.targets.items()})


WriterFactory = Callable[[Connection, StateTables, Bookkeeping, dt.datetime], BatchWriter]
"""Makes the writer of one batch: (transaction, state tables, bookkeeping tables, batch timestamp)."""


def convert_columns(
    rows: list[tuple[Any, ...]], binds: Sequence[Callable[[Any], Any] | None], sql: str
) -> list[tuple[Any, ...]]:
    """`rows` with each column's values passed through its converter, column by column. A value
    a converter refuses raises the StatementError SQLAlchemy raises for it."""
    if not rows or not any(binds):
        return rows
    columns: list[Any] = list(zip(*rows, strict=True))
    for i, bind in enumerate(binds):
        if bind is not None:
            columns[i] = map(bind, columns[i])
    try:
        return list(zip(*columns, strict=True))
    except Exception as exc:
        raise StatementError(f"({type(exc).__module__}.{type(exc).__name__}) {exc}", sql, None, exc,
                             ismulti=True) from exc

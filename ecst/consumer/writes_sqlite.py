"""The SQLite batch writer: `writes.BatchWriter`'s guarded writes as SQL prepared once per state table.

`BatchWriter` builds SQLAlchemy statements for every batch and has SQLAlchemy process every bound
value of every row; on SQLite that costs far more than the writes themselves. This writer
prepares, once per state table, the SQL text of each statement and the converter of each column
(the one SQLAlchemy's bind processor applies, faster for SQLite's date and time text), converts
the values of a batch column by column, and hands the rows to the driver's `executemany` through
`Connection.exec_driver_sql`, in the batch's transaction. The semantics are BatchWriter's: the
position guard in each statement's WHERE, upserts dropped by a newer delete tombstone, deletes
recorded as tombstones, unchanged-TOAST columns left out of the SET list (one statement per set,
`plan.group_by_unchanged`'s grouping), the same counts, the offsets and snapshot progress in the
same transaction. A database error is raised as SQLAlchemy raises it (a `DBAPIError` carrying the
driver's error), a value no converter takes as the `StatementError` SQLAlchemy raises, so the
consumer rejects the batch the same way.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.sqlite import DATE, DATETIME, TIME
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeEngine

from ecst.consumer.events import ChangeEvent
from ecst.consumer.schema import FLOOR, POSITION, Bookkeeping
from ecst.consumer.snapshots import SnapshotState
from ecst.consumer.tables import StateTables
from ecst.consumer.types import UNCHANGED, UtcDateTime
from ecst.consumer.writes import (
    _CHUNK,
    BatchWriter,
    Offsets,
    convert_columns,
    snapshot_guard,
    snapshot_targets,
)

Bind = Callable[[Any], Any]
_NOTHING_UNCHANGED: frozenset[str] = frozenset()


def quote(name: str) -> str:
    """An SQL identifier, always quoted."""
    return '"' + name.replace('"', '""') + '"'


# ----- values: what SQLAlchemy's bind processors do, chosen once per column ------------------
_PROBE_DATETIMES = (dt.datetime(2024, 1, 2, 3, 4, 5, 6), dt.datetime(1, 1, 1),
                    dt.datetime(999, 12, 31, 23, 59, 59))


def _iso_datetime(processor: Bind) -> Bind:
    def convert(value: Any) -> Any:
        if value.__class__ is dt.datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return processor(value)  # None, a date, an aware datetime, or what it refuses

    return convert


def _iso_utc_datetime(processor: Bind) -> Bind:
    """UtcDateTime on SQLite stores a UTC datetime's wall time as DATETIME text."""

    def convert(value: Any) -> Any:
        if value.__class__ is dt.datetime and value.tzinfo is dt.UTC:
            return value.isoformat(" ", "microseconds")[:-6]  # less its "+00:00"
        return processor(value)

    return convert


def _iso_date(processor: Bind) -> Bind:
    def convert(value: Any) -> Any:
        if value.__class__ is dt.date:
            return value.isoformat()
        return processor(value)

    return convert


def _iso_time(processor: Bind) -> Bind:
    def convert(value: Any) -> Any:
        if value.__class__ is dt.time and value.tzinfo is None:
            return value.isoformat("microseconds")
        return processor(value)

    return convert


# SQLite's date and time types store text through `%`-formatting a dict per value; `isoformat`
# writes the same text for their default storage formats. Each shortcut takes the values it
# knows and leaves any other to SQLAlchemy's processor; it is used only if it gives the
# processor's result for every probe value.
_ISO: dict[type[TypeEngine[Any]], tuple[Callable[[Bind], Bind], tuple[Any, ...]]] = {
    UtcDateTime: (_iso_utc_datetime,
                  (*_PROBE_DATETIMES, *(d.replace(tzinfo=dt.UTC) for d in _PROBE_DATETIMES))),
    DATETIME: (_iso_datetime, _PROBE_DATETIMES),
    DATE: (_iso_date, tuple(d.date() for d in _PROBE_DATETIMES)),
    TIME: (_iso_time, tuple(d.time() for d in _PROBE_DATETIMES)),
}


def bind_converter(type_: TypeEngine[Any], dialect: Dialect) -> Bind | None:
    """What SQLAlchemy does to a value bound to a column of `type_` on `dialect` (None: nothing):
    its bind processor, with SQLite's date and time text written by `isoformat`."""
    impl = type_.dialect_impl(dialect)
    processor = impl.bind_processor(dialect)
    if processor is None:
        return None
    shortcut = next((found for kind, found in _ISO.items() if isinstance(impl, kind)), None)
    if shortcut is None:
        return processor
    make, probes = shortcut
    fast = make(processor)
    if any(fast(p) != processor(p) for p in probes):
        return processor  # a storage format of its own: SQLAlchemy's processor then
    return fast


# ----- statements prepared once per state table ----------------------------------------------
class _TableStatements:
    """One state table's statements (SQL text) and column converters."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self.table = table
        self.name = quote(table.name)
        columns = [c for c in table.columns if c.name != POSITION]
        self.names = [c.name for c in columns]
        self.key_cols = [c.name for c in table.primary_key.columns]
        self.binds = [bind_converter(c.type, dialect) for c in columns] + [None]  # + the position
        self.key_binds = [bind_converter(table.c[k].type, dialect) for k in self.key_cols]
        getter = operator.itemgetter(*self.names)
        self.values: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            getter if len(self.names) > 1 else lambda row: (getter(row),))
        self._upserts: dict[frozenset[str], str] = {}
        self._pos = quote(POSITION)
        where_key = " AND ".join(f"{quote(k)} = ?" for k in self.key_cols)
        self.delete_guarded = f"DELETE FROM {self.name} WHERE {where_key} AND {quote(POSITION)} <= ?"
        self.delete_any = f"DELETE FROM {self.name} WHERE {where_key}"

    def upsert(self, unchanged: frozenset[str]) -> str:
        """The guarded upsert of rows that leave the columns `unchanged` as stored."""
        sql = self._upserts.get(unchanged)
        if sql is None:
            updated = [c for c in self.names if c not in self.key_cols and c not in unchanged] + [POSITION]
            sql = self._upserts[unchanged] = _upsert_sql(
                self.table, [*self.names, POSITION], self.key_cols, updated,
                f" WHERE {self.name}.{self._pos} <= excluded.{self._pos}")
        return sql


def _upsert_sql(table: Table, columns: Sequence[str], keys: Sequence[str], updated: Sequence[str],
                where: str = "", also: Sequence[str] = ()) -> str:
    """INSERT of `columns` that, on a conflict on `keys`, sets the `updated` columns to the new
    values (and does the assignments `also`), where `where` holds."""
    name = quote(table.name)
    assignments = [f"{quote(c)} = excluded.{quote(c)}" for c in updated] + list(also)
    return (f"INSERT INTO {name} ({', '.join(map(quote, columns))}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(map(quote, keys))}) DO UPDATE SET {', '.join(assignments)}{where}")


class _BookStatements:
    """The statements of a namespace's bookkeeping: tombstones, offsets, snapshots, generation."""

    def __init__(self, book: Bookkeeping, dialect: Dialect) -> None:
        self.book = book
        deleted, pos = book.deleted, quote(POSITION)
        name = quote(deleted.name)
        self.tomb_columns = ("table_name", "key", POSITION, "deleted_at")
        self.tomb_binds = [bind_converter(deleted.c[c].type, dialect) for c in self.tomb_columns]
        self.any_tomb = f"SELECT 1 FROM {name} WHERE table_name = ? LIMIT 1"
        self._lookups: dict[int, str] = {}
        self.lookup_head = f'SELECT "key", {pos} FROM {name} WHERE table_name = ? AND "key" IN '
        self.record_tomb = _upsert_sql(deleted, self.tomb_columns, ("table_name", "key"),
                                       (POSITION, "deleted_at"), f" WHERE {name}.{pos} <= excluded.{pos}")
        offsets = book.offsets
        self.offset_columns = ("topic", "partition", "next_offset", "updated_at", FLOOR)
        self.offset_binds = [bind_converter(offsets.c[c].type, dialect) for c in self.offset_columns]
        floor = quote(FLOOR)  # a floor that did not move stays
        self.save_offsets = _upsert_sql(
            offsets, self.offset_columns, ("topic", "partition"), ("next_offset", "updated_at"),
            also=[f"{floor} = coalesce(excluded.{floor}, {quote(offsets.name)}.{floor})"])
        snapshots = book.snapshots
        self.snapshot_columns = ("topic", "state", POSITION, "targets", "updated_at")
        self.snapshot_binds = [bind_converter(snapshots.c[c].type, dialect) for c in self.snapshot_columns]
        self.save_snapshot = _upsert_sql(snapshots, self.snapshot_columns, ("topic",),
                                         ("state", POSITION, "targets", "updated_at"),
                                         " WHERE " + snapshot_guard(snapshots.name, dialect))
        self.generation = (f"SELECT value FROM {quote(book.meta_table.name)} "
                           "WHERE \"key\" = 'generation'")

    def lookup(self, n: int) -> str:
        """The positions of the tombstones of `n` keys of one table."""
        sql = self._lookups.get(n)
        if sql is None:
            sql = self._lookups[n] = self.lookup_head + "(" + ", ".join("?" * n) + ")"
        return sql


class SqliteWriters:
    """Makes the SQLite writer of each batch of one state store (a `writes.WriterFactory`), and
    keeps the statements it prepared for each state table."""

    MAX_TABLES = 256  # prepared tables kept; a table extended or reloaded is a new Table object

    def __init__(self) -> None:
        self._tables: dict[int, _TableStatements] = {}
        self._books: dict[int, _BookStatements] = {}

    def __call__(self, conn: Connection, tables: StateTables, book: Bookkeeping,
                 now: dt.datetime) -> BatchWriter:
        return SqliteBatchWriter(conn, tables, book, now, self)

    def table(self, table: Table, dialect: Dialect) -> _TableStatements:
        found = self._tables.get(id(table))
        if found is None or found.table is not table:
            if len(self._tables) >= self.MAX_TABLES:
                self._tables.clear()
            found = self._tables[id(table)] = _TableStatements(table, dialect)
        return found

    def book(self, book: Bookkeeping, dialect: Dialect) -> _BookStatements:
        found = self._books.get(id(book))
        if found is None or found.book is not book:
            found = self._books[id(book)] = _BookStatements(book, dialect)
        return found


class SqliteBatchWriter(BatchWriter):
    """`BatchWriter` with its row statements run as prepared SQL (see the module docstring)."""

    def __init__(self, conn: Connection, tables: StateTables, book: Bookkeeping, now: dt.datetime,
                 prepared: SqliteWriters) -> None:
        super().__init__(conn, tables, book, now)
        self.prepared = prepared
        self.sql = prepared.book(book, conn.dialect)

    def generation(self) -> int:
        return int(self.conn.exec_driver_sql(self.sql.generation).scalar() or 0)

    def save_offsets(self, next_offsets: Offsets, floors: Offsets) -> None:
        rows = [(t, p, o, self.now, floors.get((t, p))) for (t, p), o in sorted(next_offsets.items())]
        self._run(self.sql.save_offsets, rows, self.sql.offset_binds)

    def save_snapshot(self, topic: str, snap: SnapshotState) -> None:
        row = (topic, snap.state, snap.position, snapshot_targets(snap), self.now)
        self._run(self.sql.save_snapshot, [row], self.sql.snapshot_binds)

    def _run(self, sql: str, rows: list[tuple[Any, ...]], binds: Sequence[Bind | None]) -> Any:
        """Execute `sql` for each row (its values converted first); the result."""
        return self.conn.exec_driver_sql(sql, convert_columns(rows, binds, sql))

    def _tombstone_positions(self, table: str, keys: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        if not keys or self.conn.exec_driver_sql(self.sql.any_tomb, (table,)).first() is None:
            return found  # no tombstone for this table at all (a snapshot load, say)
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            rows = self.conn.exec_driver_sql(self.sql.lookup(len(chunk)), (table, *chunk))
            found.update({k: p for k, p in rows})
        return found

    def _upsert(self, table: Table, events: list[ChangeEvent], key_cols: list[str]) -> None:
        st = self.prepared.table(table, self.conn.dialect)
        values, names = st.values, st.names
        groups: dict[frozenset[str], tuple[list[tuple[Any, ...]], Counter[str]]] = {}
        for e in events:  # plan.group_by_unchanged's rows, as tuples in column order
            after = e.after or {}
            if UNCHANGED in after.values():
                unchanged = frozenset(c for c, v in after.items() if v is UNCHANGED)
                row = tuple(None if c in unchanged else after.get(c, e.key.get(c)) for c in names)
            else:
                unchanged = _NOTHING_UNCHANGED
                try:
                    row = values(after)
                except KeyError:  # a column the event does not carry: from its key, else NULL
                    row = tuple(after.get(c, e.key.get(c)) for c in names)
            group = groups.get(unchanged)
            if group is None:
                group = groups[unchanged] = ([], Counter())
            group[0].append((*row, e.position))
            group[1][e.op] += 1
        for unchanged, (rows, ops) in groups.items():
            result = self._run(st.upsert(unchanged), rows, st.binds)
            for op, n in ops.items():
                self.stats.by_table_op[(op, table.name)] += n
            if result.rowcount is not None and 0 <= result.rowcount < len(rows):
                self.stats.stale += len(rows) - result.rowcount

    def _delete(self, name: str, table: Table | None, keyed: list[tuple[str, ChangeEvent]]) -> None:
        guarded = [(k, e) for k, e in keyed if e.position is not None]
        if table is not None:
            st = self.prepared.table(table, self.conn.dialect)
            key_cols = st.key_cols
            if guarded:
                rows = [(*[e.key[c] for c in key_cols], e.position) for _, e in guarded]
                self._run(st.delete_guarded, rows, [*st.key_binds, None])
            unguarded = [e for _, e in keyed if e.position is None]
            if unguarded:  # deletes known only from Kafka tombstones: offset order is their order
                self._run(st.delete_any, [tuple(e.key[c] for c in key_cols) for e in unguarded], st.key_binds)
        if guarded:  # a tombstone record, so that a replayed older create cannot resurrect it
            self._run(self.sql.record_tomb, [(name, k, e.position, self.now) for k, e in guarded],
                      self.sql.tomb_binds)
        self.stats.by_table_op[("d", name)] += len(keyed)

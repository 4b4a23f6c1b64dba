"""The PostgreSQL batch writer: `writes.BatchWriter`'s guarded writes, compiled once, run in bulk.

`BatchWriter` builds SQLAlchemy statements for every batch and has SQLAlchemy process every bound
value of every row. This writer compiles the reference's own statements once per state table
(positional parameters, the casts SQLAlchemy renders for psycopg included, so the SQL is the
reference's), converts the values with the columns' bind processors, and runs them on the
batch's transaction in one of two ways:

- small batches: the driver's `executemany` (psycopg 3 sends the rows in pipeline mode), the
  reference's tombstone lookup and guarded `INSERT ... ON CONFLICT ... DO UPDATE ... WHERE`;
- `COPY_MIN` upserts or more of one table: `COPY` of the rows (with their key texts) into a
  temporary staging table (`ON COMMIT DELETE ROWS`, made once per connection and table shape),
  the staged rows a newer delete tombstone stops removed (a join), then one guarded
  `INSERT ... SELECT ... ON CONFLICT ... DO UPDATE ... WHERE` per set of unchanged-TOAST columns.
  `COPY` parses each value as the column's text input, where a bound parameter goes through
  its cast: the two agree for the Python type each column is written with, so a batch holding
  a value of another type (or a zoned time for a column without a zone) goes the first way.

- rows whose decoding was deferred to the database (`events.decode`'s `defer`, `pg_decode`), at
  least `COPY_MIN` of one table and struct: `COPY` of each row's JSON values as one `jsonb`
  document (with its position and key text) into a temporary table, the rows a newer delete
  tombstone stops removed, then one guarded `INSERT ... SELECT ... ON CONFLICT ... DO UPDATE ...
  WHERE` whose SELECT decodes the columns (`pg_decode.column_sql`). Fewer rows, a table whose
  columns are not what the struct's fields make, or a value JSON cannot carry, and they are
  decoded in Python and go one of the two ways above.

The semantics are BatchWriter's: the position guard, upserts dropped by a newer tombstone (and
counted as stale, as are the rows the guard rejects), deletes recorded as tombstones,
unchanged-TOAST columns left out of the SET list, truncates, the offsets and snapshot progress
in the same transaction, the same counts. A database error is raised as SQLAlchemy raises it (a
`DBAPIError` carrying psycopg's error), a value no bind processor takes as SQLAlchemy's
`StatementError`, so the consumer rejects the batch and applies it record by record, and a
single record always takes the reference's statements.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import operator
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from psycopg import Binary
from psycopg.types.json import Json
from sqlalchemy import Table, and_, bindparam, delete, func, text
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from ecst.consumer.events import ChangeEvent, materialized
from ecst.consumer.pg_decode import column_sql
from ecst.consumer.plan import TableChanges
from ecst.consumer.schema import FLOOR, POSITION, Bookkeeping
from ecst.consumer.snapshots import SnapshotState
from ecst.consumer.tables import StateTables
from ecst.consumer.types import UNCHANGED, ExactDecimal, Field, UtcDateTime, sql_type
from ecst.consumer.writes import BatchWriter, Offsets, convert_columns, snapshot_guard, snapshot_targets

Bind = Callable[[Any], Any]
_NOTHING_UNCHANGED: frozenset[str] = frozenset()
_STAGE_KEY = "_ecst_stage_key"  # a staged row's key text (its tombstone's key)
_STAGE_GROUP = "_ecst_stage_group"  # a staged row's set of unchanged columns, numbered
_DECODE_STAGE = "ecst_decode_stage"  # one per connection: (doc jsonb, position, key text)
COPY_MIN = 64  # upserts of one table from which COPY beats executemany (docs/benchmarks.md)


# ----- compiling the reference's statements ------------------------------------------------
class _Compiled:
    """One statement as SQL text with positional parameters, and the bind processor of each."""

    def __init__(self, stmt: ClauseElement, dialect: Dialect, order: Sequence[str]) -> None:
        compiled: Any = stmt.compile(dialect=dialect)  # an SQLCompiler
        self.sql = compiled.string
        params = list(compiled.positiontup or ())
        if sorted(params) != sorted(order):
            raise AssertionError(f"parameters {params} are not {list(order)}")
        # the parameters in SQL order, taken from rows whose values are in `order`
        self.pick = [list(order).index(p) for p in params]
        self.identity = self.pick == list(range(len(order)))
        self.binds = [_processor(compiled.binds[p].type, dialect) for p in params]

    def rows(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """`rows` in parameter order, each value converted as SQLAlchemy converts it."""
        if not self.identity:
            pick = self.pick
            rows = [tuple(r[i] for i in pick) for r in rows]
        return convert_columns(rows, self.binds, self.sql)


def _processor(type_: sqltypes.TypeEngine[Any], dialect: Dialect) -> Bind | None:
    """What SQLAlchemy does to a value bound to `type_` on `dialect` (None: nothing); the values
    its processor returns as they are pass without a call: a UTC datetime for UtcDateTime, a
    Decimal for ExactDecimal."""
    impl = type_.dialect_impl(dialect)
    processor = impl.bind_processor(dialect)
    if processor is None:
        return None
    kind: type | None = (dt.datetime if isinstance(impl, UtcDateTime)
                         else decimal.Decimal if isinstance(impl, ExactDecimal) else None)
    if kind is None:
        return processor
    slow = processor

    def convert(value: Any) -> Any:
        if value.__class__ is kind and (kind is decimal.Decimal or getattr(value, "tzinfo", None) is dt.UTC):
            return value
        return slow(value)

    return convert


def _positional(dialect: Dialect) -> Dialect:
    """A dialect like `dialect` that compiles positional (`%s`) parameters."""
    out: Dialect = type(dialect)(paramstyle="format")  # type: ignore[call-arg]
    out.server_version_info = dialect.server_version_info
    return out


# ----- what COPY takes as the reference's casts take it ----------------------------------------
_NAIVE = "naive"  # a datetime or time without a zone only


def _copy_kind(type_: sqltypes.TypeEngine[Any], dialect: Dialect) -> tuple[frozenset[type], str] | None:
    """The classes of converted values that COPY's text input reads as the reference's bound
    parameter is read, for a column of `type_` (with "naive" where a zone must be absent);
    None: none, the column is never copied."""
    impl = type_.dialect_impl(dialect)
    if isinstance(impl, sqltypes.TypeDecorator):
        impl = impl.impl_instance
    kinds: list[tuple[type[Any], tuple[type, ...], str]] = [
        (sqltypes.Boolean, (bool,), ""),
        (sqltypes.Integer, (int,), ""),
        (sqltypes.Float, (float, int), ""),
        (sqltypes.Numeric, (decimal.Decimal, int), ""),
        (sqltypes.DateTime, (dt.datetime,), "" if getattr(impl, "timezone", False) else _NAIVE),
        (sqltypes.Date, (dt.date,), ""),
        (sqltypes.Time, (dt.time,), "" if getattr(impl, "timezone", False) else _NAIVE),
        (sqltypes.Interval, (dt.timedelta,), ""),
        (postgresql.INTERVAL, (dt.timedelta,), ""),
        (sqltypes.JSON, (Json, str), ""),  # its processor's JSON document
        (sqltypes.LargeBinary, (bytes, Binary), ""),  # its processor's psycopg Binary
        (sqltypes.String, (str,), ""),
    ]
    for kind, classes, zone in kinds:
        if isinstance(impl, kind):
            return frozenset((*classes, type(None))), zone
    return None


def _copyable(rows: list[tuple[Any, ...]], kinds: Sequence[tuple[frozenset[type], str] | None]) -> bool:
    """Whether every converted value of `rows` is one COPY reads as the reference's cast does."""
    for i, kind in enumerate(kinds):
        if kind is None:
            return False
        classes, zone = kind
        found = {r[i].__class__ for r in rows}
        if not found <= classes:
            return False
        if zone == _NAIVE and any(r[i] is not None and r[i].tzinfo is not None for r in rows):
            return False
    return True


# ----- statements prepared once per state table and per bookkeeping -------------------------
class _TableStatements:
    """One state table's statements: the reference's, compiled, and its COPY staging."""

    def __init__(self, table: Table, dialect: Dialect, positional: Dialect) -> None:
        self.table = table
        self.dialect, self.positional = dialect, positional
        q = dialect.identifier_preparer.quote
        self.qname = q(table.name)
        columns = [c for c in table.columns if c.name != POSITION]
        self.names = [c.name for c in columns]
        self.key_cols = [c.name for c in table.primary_key.columns]
        self.order = [*self.names, POSITION]
        getter = operator.itemgetter(*self.names)
        self.values: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            getter if len(self.names) > 1 else lambda row: (getter(row),))
        self._upserts: dict[frozenset[str], _Compiled] = {}
        self._merges: dict[frozenset[str], str] = {}
        where_key = and_(*[table.c[c] == bindparam(f"k_{c}") for c in self.key_cols])
        key_order = [f"k_{c}" for c in self.key_cols]
        self.delete_guarded = _Compiled(delete(table).where(where_key, table.c[POSITION] <= bindparam("pos")),
                                        positional, [*key_order, "pos"])
        self.delete_any = _Compiled(delete(table).where(where_key), positional, key_order)
        # COPY staging: a temporary table shaped like the state table, plus key text and group
        shape = repr([(c.name, str(c.type.compile(dialect=dialect))) for c in table.columns])
        self.stage = q("ecst_stage_" + hashlib.sha1(f"{table.name}\0{shape}".encode()).hexdigest()[:20])
        self.make_stage = (f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} (LIKE {self.qname}, "
                           f"{q(_STAGE_KEY)} text, {q(_STAGE_GROUP)} integer) ON COMMIT DELETE ROWS")
        cols = ", ".join(q(c) for c in [*self.order, _STAGE_KEY, _STAGE_GROUP])
        self.copy = f"COPY {self.stage} ({cols}) FROM STDIN"
        self.kinds = [_copy_kind(c.type, dialect) for c in [*columns, table.c[POSITION]]]
        self.stage_binds = [_processor(c.type, dialect) for c in columns] + [None, None, None]

    def upsert(self, unchanged: frozenset[str]) -> _Compiled:
        """The reference's guarded upsert of rows that leave the columns `unchanged` as stored."""
        found = self._upserts.get(unchanged)
        if found is None:
            stmt = dialect_insert_for(self.table)
            set_ = {c: stmt.excluded[c] for c in self.names if c not in self.key_cols and c not in unchanged}
            set_[POSITION] = stmt.excluded[POSITION]
            stmt = stmt.on_conflict_do_update(index_elements=self.key_cols, set_=set_,
                                              where=self.table.c[POSITION] <= stmt.excluded[POSITION])
            found = self._upserts[unchanged] = _Compiled(stmt, self.positional, self.order)
        return found

    def stopped(self, deleted: str) -> str:
        """Remove from the staging table the rows that a newer delete tombstone in `deleted`
        stops (parameter: the table's logical name), returning their (group, key text)."""
        q = self.dialect.identifier_preparer.quote
        pos = q(POSITION)
        return (f"DELETE FROM {self.stage} AS s USING {deleted} AS d WHERE d.table_name = %s "
                f"AND d.{q('key')} = s.{q(_STAGE_KEY)} AND d.{pos} > s.{pos} "
                f"RETURNING s.{q(_STAGE_GROUP)}, s.{q(_STAGE_KEY)}")

    def merge(self, unchanged: frozenset[str]) -> str:
        """The guarded upsert of one group of staged rows (parameter: its number) that leave the
        columns `unchanged` as stored."""
        found = self._merges.get(unchanged)
        if found is None:
            q = self.dialect.identifier_preparer.quote
            pos = q(POSITION)
            cols = ", ".join(q(c) for c in self.order)
            updated = [c for c in self.names if c not in self.key_cols and c not in unchanged] + [POSITION]
            found = self._merges[unchanged] = (
                f"INSERT INTO {self.qname} ({cols}) SELECT {cols} FROM {self.stage} "
                f"WHERE {q(_STAGE_GROUP)} = %s "
                f"ON CONFLICT ({', '.join(q(c) for c in self.key_cols)}) DO UPDATE SET "
                + ", ".join(f"{q(c)} = excluded.{q(c)}" for c in updated)
                + f" WHERE {self.qname}.{pos} <= excluded.{pos}")
        return found


class _DecodingMerge:
    """The statements that write one state table's rows from their JSON values (rows of one
    struct, whose decoding was deferred): a staging table of documents, the removal of the rows
    a newer tombstone stops, and the merge that decodes the columns. `covered` is False when the
    table's columns are not what the struct's fields make (a column the source has since
    changed, a key column the rows lack): its rows are then decoded in Python."""

    def __init__(self, table: Table, fields: Sequence[Field], dialect: Dialect, deleted: str) -> None:
        self.table = table
        self.struct: Any = None  # the struct it was made for (PostgresWriters.decoding)
        q = dialect.identifier_preparer.quote
        by_name = {f.name: f for f in fields}
        key_cols = [c.name for c in table.primary_key.columns]
        self.covered = True
        exprs: list[str] = []
        self.params: list[str] = []  # the column names the SELECT's %s read, in order
        names: list[str] = []
        for column in table.columns:
            if column.name == POSITION:
                continue
            names.append(column.name)
            f = by_name.get(column.name)
            sql = None if f is None else column_sql(f)
            if f is None and column.name not in key_cols:
                exprs.append("NULL")  # a column the source no longer sends: NULL, as in Python
                continue
            if sql is None or f is None or _ddl(sql_type(f), dialect) != _ddl(column.type, dialect):
                self.covered = False
                return
            exprs.append(sql.replace("{value}", "(s.doc ->> %s)"))
            self.params += [column.name] * sql.count("{value}")
        self.stage = q(_DECODE_STAGE)
        pos, key = q(POSITION), q(_STAGE_KEY)
        self.make_stage = (f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
                           f"(doc jsonb, {pos} bigint, {key} text) ON COMMIT DELETE ROWS")
        self.copy = f"COPY {self.stage} (doc, {pos}, {key}) FROM STDIN"
        self.stopped = (f"DELETE FROM {self.stage} AS s USING {deleted} AS d WHERE d.table_name = %s "
                        f"AND d.{q('key')} = s.{key} AND d.{pos} > s.{pos} RETURNING s.{key}")
        qname = q(table.name)
        updated = [c for c in names if c not in key_cols] + [POSITION]
        self.merge = (
            f"INSERT INTO {qname} ({', '.join(q(c) for c in [*names, POSITION])}) "
            f"SELECT {', '.join(exprs)}, s.{pos} FROM {self.stage} AS s "
            f"ON CONFLICT ({', '.join(q(c) for c in key_cols)}) DO UPDATE SET "
            + ", ".join(f"{q(c)} = excluded.{q(c)}" for c in updated)
            + f" WHERE {qname}.{pos} <= excluded.{pos}")


def _ddl(type_: sqltypes.TypeEngine[Any], dialect: Dialect) -> str:
    return str(type_.compile(dialect=dialect))


def _copy_text(raw: bytes) -> bytes:
    """`raw` (JSON, or a key text: no tab, newline or carriage return) as one COPY text field."""
    return raw.replace(b"\\", b"\\\\")


class _Cursor:
    """A psycopg cursor that remembers the statement it last ran, for the error that names it."""

    def __init__(self, cursor: Any) -> None:
        self.cursor, self.sql = cursor, ""

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        self.sql = sql
        return self.cursor.execute(sql, params)

    def copy(self, sql: str) -> Any:
        self.sql = sql
        return self.cursor.copy(sql)

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)


def dialect_insert_for(table: Table) -> Any:
    """A PostgreSQL INSERT into `table` that takes ON CONFLICT clauses."""
    return postgresql.insert(table)


class _BookStatements:
    """The reference's bookkeeping statements (tombstones, offsets, snapshots), compiled."""

    def __init__(self, book: Bookkeeping, dialect: Dialect, positional: Dialect) -> None:
        self.book = book
        q = dialect.identifier_preparer.quote
        deleted = book.deleted
        self.deleted = q(deleted.name)
        self.any_tomb = f"SELECT 1 FROM {self.deleted} WHERE table_name = %s LIMIT 1"
        self.lookup = (f"SELECT {q('key')}, {q(POSITION)} FROM {self.deleted} "
                       f"WHERE table_name = %s AND {q('key')} = ANY(%s)")
        tomb = dialect_insert_for(deleted)
        tomb = tomb.on_conflict_do_update(
            index_elements=["table_name", "key"],
            set_={POSITION: tomb.excluded[POSITION], "deleted_at": tomb.excluded.deleted_at},
            where=deleted.c[POSITION] <= tomb.excluded[POSITION])
        self.record_tomb = _Compiled(tomb, positional, ["table_name", "key", POSITION, "deleted_at"])
        offsets = book.offsets
        stmt = dialect_insert_for(offsets)
        stmt = stmt.on_conflict_do_update(
            index_elements=["topic", "partition"],
            set_={"next_offset": stmt.excluded.next_offset, "updated_at": stmt.excluded.updated_at,
                  FLOOR: func.coalesce(stmt.excluded[FLOOR], offsets.c[FLOOR])})
        self.save_offsets = _Compiled(stmt, positional,
                                      ["topic", "partition", "next_offset", "updated_at", FLOOR])
        snap = dialect_insert_for(book.snapshots)
        snap = snap.on_conflict_do_update(
            index_elements=["topic"],
            set_={"state": snap.excluded.state, POSITION: snap.excluded[POSITION],
                  "targets": snap.excluded.targets, "updated_at": snap.excluded.updated_at},
            where=text(snapshot_guard(book.snapshots.name, dialect)))
        self.save_snapshot = _Compiled(snap, positional,
                                       ["topic", "state", POSITION, "targets", "updated_at"])
        self.generation = f"SELECT value FROM {q(book.meta_table.name)} WHERE {q('key')} = 'generation'"


class _Group:
    """Upsert rows (tuples in `_TableStatements.order`) that leave the same columns unchanged, their
    key texts, and the count of their operations: plan.group_by_unchanged's grouping."""

    __slots__ = ("keys", "ops", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.keys: list[str] = []
        self.ops: list[str] = []  # each row's operation


def _group_rows(
    st: _TableStatements, upserts: Sequence[tuple[str, ChangeEvent]]
) -> dict[frozenset[str], _Group]:
    """The rows of `upserts` (key text, event), grouped by the columns they leave unchanged (in
    order of first appearance). A column absent from `after` takes its value from the key, else NULL."""
    names, values = st.names, st.values
    groups: dict[frozenset[str], _Group] = {}
    for k, e in upserts:
        after = e.after or {}
        if UNCHANGED in after.values():
            unchanged = frozenset(c for c, v in after.items() if v is UNCHANGED)
            row = tuple(None if c in unchanged else after.get(c, e.key.get(c)) for c in names)
        else:
            unchanged = _NOTHING_UNCHANGED
            try:
                row = values(after)
            except KeyError:  # a column the event does not carry: from its key, else NULL
                row = tuple(after[c] if c in after else e.key.get(c) for c in names)
        group = groups.get(unchanged)
        if group is None:
            group = groups[unchanged] = _Group()
        group.rows.append((*row, e.position))
        group.keys.append(k)
        group.ops.append(e.op)
    return groups


class PostgresWriters:
    """Makes the PostgreSQL writer of each batch of one state store (a `writes.WriterFactory`),
    and keeps the statements it compiled for each state table. `copy_min`: the upserts of one
    table from which they are copied and merged rather than sent by executemany."""

    MAX_TABLES = 256  # prepared tables kept; a table extended or reloaded is a new Table object
    takes_deferred = True  # its writers take rows whose decoding was deferred (StateStore.deferral)

    def __init__(self, copy_min: int = COPY_MIN) -> None:
        self.copy_min = copy_min
        self._tables: dict[int, _TableStatements] = {}
        self._books: dict[int, _BookStatements] = {}
        self._decoding: dict[tuple[int, int], _DecodingMerge] = {}
        self._positional: Dialect | None = None

    def __call__(self, conn: Connection, tables: StateTables, book: Bookkeeping,
                 now: dt.datetime) -> BatchWriter:
        return PostgresBatchWriter(conn, tables, book, now, self)

    def positional(self, dialect: Dialect) -> Dialect:
        if self._positional is None:
            self._positional = _positional(dialect)
        return self._positional

    def table(self, table: Table, dialect: Dialect) -> _TableStatements:
        found = self._tables.get(id(table))
        if found is None or found.table is not table:
            if len(self._tables) >= self.MAX_TABLES:
                self._tables.clear()
            found = self._tables[id(table)] = _TableStatements(table, dialect, self.positional(dialect))
        return found

    def decoding(self, table: Table, struct: Any, dialect: Dialect, deleted: str) -> _DecodingMerge:
        """The decoding merge of `table` for rows of `struct` (an `events` struct), made once."""
        key = (id(table), id(struct))
        found = self._decoding.get(key)
        if found is None or found.table is not table or found.struct is not struct:
            if len(self._decoding) >= self.MAX_TABLES:
                self._decoding.clear()
            found = self._decoding[key] = _DecodingMerge(table, struct.fields, dialect, deleted)
            found.struct = struct
        return found

    def book(self, book: Bookkeeping, dialect: Dialect) -> _BookStatements:
        found = self._books.get(id(book))
        if found is None or found.book is not book:
            found = self._books[id(book)] = _BookStatements(book, dialect, self.positional(dialect))
        return found


class PostgresBatchWriter(BatchWriter):
    """`BatchWriter` with its row statements compiled once and run in bulk (module docstring)."""

    def __init__(self, conn: Connection, tables: StateTables, book: Bookkeeping, now: dt.datetime,
                 prepared: PostgresWriters) -> None:
        super().__init__(conn, tables, book, now)
        self.prepared = prepared
        self.sql = prepared.book(book, conn.dialect)
        self._staged: set[str] = set()  # staging tables written in this transaction

    def generation(self) -> int:
        return int(self.conn.exec_driver_sql(self.sql.generation).scalar() or 0)

    def save_offsets(self, next_offsets: Offsets, floors: Offsets) -> None:
        rows = [(t, p, o, self.now, floors.get((t, p))) for (t, p), o in sorted(next_offsets.items())]
        self._run(self.sql.save_offsets, rows)

    def save_snapshot(self, topic: str, snap: SnapshotState) -> None:
        row = (topic, snap.state, snap.position, snapshot_targets(snap), self.now)
        self._run(self.sql.save_snapshot, [row])

    def _run(self, stmt: _Compiled, rows: list[tuple[Any, ...]]) -> Any:
        """Execute `stmt` for each row (its values converted first), by executemany; the result."""
        params = stmt.rows(rows)
        if len(params) == 1:
            return self.conn.exec_driver_sql(stmt.sql, params[0])
        return self.conn.exec_driver_sql(stmt.sql, params)

    def _tombstone_positions(self, table: str, keys: list[str]) -> dict[str, int]:
        if not keys or self.conn.exec_driver_sql(self.sql.any_tomb, (table,)).first() is None:
            return {}  # no tombstone for this table at all (a snapshot load, say)
        return {k: p for k, p in self.conn.exec_driver_sql(self.sql.lookup, (table, keys))}

    takes_deferred = True

    def _table(self, changes: TableChanges) -> None:
        changes = self._merge_deferred(changes)
        upserts = changes.keyed_upserts()
        if len(upserts) < self.prepared.copy_min:
            super()._table(changes)  # the lookup of tombstones, then _upsert by executemany
            return
        table = self.tables.for_changes(self.conn, changes)
        if not self._copy_upserts(table, changes.table, upserts):
            self._upsert(table, self._not_deleted(changes.table, upserts), [])
        deletes = changes.keyed_deletes()
        if deletes:
            self._delete(changes.table, table, deletes)

    def _upsert(self, table: Table, events: list[ChangeEvent], key_cols: list[str]) -> None:
        st = self.prepared.table(table, self.conn.dialect)
        for unchanged, group in _group_rows(st, [("", e) for e in events]).items():
            result = self._run(st.upsert(unchanged), group.rows)
            self._count(table.name, group, result.rowcount)

    def _count(self, table: str, group: _Group, written: int | None, stopped: set[str] | None = None) -> None:
        """Count a group's upserts, `written` of them written; those whose keys are `stopped` by
        newer tombstones count as stale only, as the reference never offers them."""
        ops = group.ops
        if stopped:
            ops = [op for op, k in zip(group.ops, group.keys, strict=True) if k not in stopped]
            self.stats.stale += len(group.ops) - len(ops)
        for op, n in Counter(ops).items():
            self.stats.by_table_op[(op, table)] += n
        if written is not None and 0 <= written < len(ops):
            self.stats.stale += len(ops) - written

    @contextlib.contextmanager
    def _staging(self, stage: str, make: str) -> Iterator[_Cursor]:
        """A cursor on the batch's connection with the temporary table `stage` made (`make`), or
        emptied for a second step of this transaction; a psycopg error inside is raised as
        SQLAlchemy's DBAPIError naming the statement that failed."""
        raw: Any = self.conn.connection.driver_connection  # the psycopg connection
        dbapi_error = self.conn.dialect.loaded_dbapi.Error
        with raw.cursor() as psycopg_cursor:
            cur = _Cursor(psycopg_cursor)
            try:
                cur.execute(f"TRUNCATE {stage}" if stage in self._staged else make)
                self._staged.add(stage)
                yield cur
            except dbapi_error as exc:
                raise DBAPIError.instance(cur.sql, None, exc, dbapi_error, dialect=self.conn.dialect) from exc

    def _copy_upserts(self, table: Table, name: str, upserts: list[tuple[str, ChangeEvent]]) -> bool:
        """Upsert by COPY and merge; False (nothing done) when a value is not one COPY reads as
        the reference's statement does. The upserts a newer delete tombstone stops are deleted
        from the staging table by a join (a hash join: an anti-join in the merge itself was
        planned as a nested loop on the unanalysed staging table) and counted as stale."""
        st = self.prepared.table(table, self.conn.dialect)
        groups = _group_rows(st, upserts)
        staged: list[tuple[Any, ...]] = []
        for number, group in enumerate(groups.values()):
            rows = [(*r, k, number) for r, k in zip(group.rows, group.keys, strict=True)]
            converted = convert_columns(rows, st.stage_binds, st.copy)
            if not _copyable(converted, st.kinds):
                return False
            staged.extend(converted)
        with self._staging(st.stage, st.make_stage) as cur:
            with cur.copy(st.copy) as copy:
                for r in staged:
                    copy.write_row(r)
            stopped: dict[int, set[str]] = {}
            for number, key in cur.execute(st.stopped(self.sql.deleted), (name,)):
                stopped.setdefault(number, set()).add(key)
            for number, (unchanged, group) in enumerate(groups.items()):
                cur.execute(st.merge(unchanged), (number,))
                self._count(table.name, group, cur.rowcount, stopped.get(number, set()))
        return True

    def _merge_deferred(self, changes: TableChanges) -> TableChanges:
        """Write the upserts whose decoding was deferred by the decoding merge when it can take
        them (module docstring), and return what is left to write, decoded in Python."""
        deferred = [(k, e) for k, e in changes.latest.items() if e.deferred is not None]
        if not deferred:
            return changes
        struct = deferred[0][1].deferred
        if len(deferred) >= self.prepared.copy_min and all(e.deferred is struct for _, e in deferred):
            table = self.tables.for_changes(self.conn, changes)
            merge = self.prepared.decoding(table, struct, self.conn.dialect, self.sql.deleted)
            if merge.covered and self._decode_in_database(merge, changes.table, deferred):
                written = {k for k, _ in deferred}
                rest = {k: e for k, e in changes.latest.items() if k not in written}
                return TableChanges(changes.table, rest)
        return TableChanges(changes.table, {k: materialized(e) for k, e in changes.latest.items()})

    def _decode_in_database(self, merge: _DecodingMerge, name: str,
                            upserts: list[tuple[str, ChangeEvent]]) -> bool:
        """COPY the rows' JSON values, drop those a newer tombstone stops, merge the rest; False
        (nothing done) when a row's values are not JSON that orjson writes (an integer beyond 64
        bits, text that is not UTF-8)."""
        lines: list[bytes] = []
        group = _Group()
        try:
            for k, e in upserts:
                if e.position is None:
                    return False
                lines.append(b"%s\t%d\t%s\n" % (_copy_text(orjson.dumps(e.after)), e.position,
                                                  _copy_text(k.encode())))
                group.keys.append(k)
                group.ops.append(e.op)
        except (orjson.JSONEncodeError, TypeError, UnicodeEncodeError):
            return False
        with self._staging(merge.stage, merge.make_stage) as cur:
            with cur.copy(merge.copy) as copy:
                copy.write(b"".join(lines))
            stopped = {key for (key,) in cur.execute(merge.stopped, (name,))}
            cur.execute(merge.merge, merge.params)
            self._count(merge.table.name, group, cur.rowcount, stopped)
        return True

    def _delete(self, name: str, table: Table | None, keyed: list[tuple[str, ChangeEvent]]) -> None:
        guarded = [(k, e) for k, e in keyed if e.position is not None]
        if table is not None:
            st = self.prepared.table(table, self.conn.dialect)
            key_cols = st.key_cols
            if guarded:
                rows = [(*[e.key[c] for c in key_cols], e.position) for _, e in guarded]
                self._run(st.delete_guarded, rows)
            unguarded = [e for _, e in keyed if e.position is None]
            if unguarded:  # deletes known only from Kafka tombstones: offset order is their order
                self._run(st.delete_any, [tuple(e.key[c] for c in key_cols) for e in unguarded])
        if guarded:  # a tombstone record, so that a replayed older create cannot resurrect it
            self._run(self.sql.record_tomb, [(name, k, e.position, self.now) for k, e in guarded])
        self.stats.by_table_op[("d", name)] += len(keyed)

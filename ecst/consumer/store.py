"""The private state store: state tables, per-row positions, delete tombstones and offsets.

Every batch is applied in one transaction together with the Kafka offsets it advances to, so
the state and the offsets can never disagree. Writes are guarded by source position: an upsert
or delete only touches a row whose stored position is not newer than the event's, and an upsert
is dropped when a newer delete tombstone exists for its key.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ecst.consumer.events import ChangeEvent
from ecst.consumer.outage import broken, reason, transient, unavailable, unusable
from ecst.consumer.plan import TableChanges, key_text, plan_batch
from ecst.consumer.positions import commit_order
from ecst.consumer.types import UNCHANGED, Field, sql_type
from ecst.exceptions import StaleStateError, StateStoreError  # StaleStateError: re-exported

log = logging.getLogger(__name__)
R = TypeVar("R")

POSITION = "_ecst_position"
FLOOR = "position_floor"
OFFSETS_TABLE = "ecst_offsets"
DELETED_TABLE = "ecst_deleted"
SNAPSHOTS_TABLE = "ecst_snapshots"
COLUMNS_TABLE = "ecst_columns"
META_TABLE = "ecst_meta"
REBUILD_TABLE = "ecst_rebuild"
SHADOW = "ecst_shadow__"  # the namespace of a rebuild's shadow copy
SNAPSHOT_RUNNING, SNAPSHOT_PENDING, SNAPSHOT_COMPLETE = "running", "pending", "complete"
_CHUNK = 500
_PROMOTE_LOCK = "hashtext('ecst:promote')"  # Postgres advisory lock: swaps against batches


SUPPORTED = ("sqlite", "postgresql")
_USE = ("use sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE "
        "(--state-url, state.url in the consumer YAML, or ECST_STATE_URL)")
CONNECT_TIMEOUT_S = 10  # a connection attempt never hangs the consumer loop for long


def check_state_url(url: str) -> None:
    """A StateStoreError, naming the URL (password hidden) and what to use, when ecst cannot keep
    a state there: not a URL, another database than SQLite or PostgreSQL, a driver not installed.
    Creates nothing."""
    _parse(url)


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StateStoreError(f"state URL {url.split('@')[-1]!r} is not a database URL: {_USE}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise StateStoreError(f"state URL {parsed.render_as_string(hide_password=True)}: ecst keeps its "
                              f"state in SQLite or PostgreSQL, not {backend}: {_USE}")
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as exc:
        raise StateStoreError(
            f"state URL {parsed.render_as_string(hide_password=True)}: its driver "
            f"{parsed.get_driver_name()!r} is not installed ({exc}): use postgresql:// (psycopg 3, "
            "installed with ecst) or sqlite:///PATH") from exc
    return parsed


def normalize_url(url: str) -> str:
    """Accept `postgresql://` URLs and run them on psycopg 3; create SQLite parent folders.
    A URL ecst cannot use is a StateStoreError (check_state_url), before anything is created."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for a state URL (normalised); Postgres connection attempts time out after
    CONNECT_TIMEOUT_S, so that an unreachable host never holds the consumer loop for long."""
    url = normalize_url(url)
    parsed = make_url(url)
    args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        args["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return create_engine(url, echo=echo, future=True, **args)


def _reachable(method: Callable[..., R]) -> Callable[..., R]:
    """A database error that means "unavailable right now" leaves the method as
    StateStoreUnavailableError (the consumer waits those out), one that means "cannot be used at all"
    (refused credentials, no such database, a corrupted file) as StateStoreError; an error in a
    statement stays as it is."""

    @functools.wraps(method)
    def call(self: StateStore, *args: Any, **kwargs: Any) -> R:
        try:
            return method(self, *args, **kwargs)
        except SQLAlchemyError as exc:
            if transient(exc):
                raise unavailable(exc, self.safe_url) from exc
            if broken(exc):
                raise unusable(exc, self.safe_url) from exc
            raise

    return call


def _sqlite_setup(engine: Engine) -> None:
    """Real transactions on SQLite (DDL included) and WAL so readers don't block the writer."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@dataclass(frozen=True)
class SnapshotState:
    """A topic's latest Debezium snapshot: running, pending (its last record is applied and
    `targets` holds the end offsets each partition must reach), or complete."""

    state: str
    position: int
    targets: dict[int, int] = field(default_factory=dict)


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


class StateStore:
    """A SQLAlchemy database holding the consumer's private state.

    `namespace` prefixes every table it owns: the live state has none; a rebuild writes its
    shadow copy under `ecst_shadow__` in the same database, and `promote` swaps it in.
    """

    def __init__(self, url: str, *, echo: bool = False, namespace: str = "") -> None:
        self.ns = namespace
        self.engine = make_engine(url, echo=echo)
        self.url = self.engine.url.render_as_string(hide_password=False)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        self._insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        self.meta = MetaData()
        self.offsets = Table(
            namespace + OFFSETS_TABLE,
            self.meta,
            Column("topic", String(255), primary_key=True),
            Column("partition", Integer, primary_key=True),
            Column("next_offset", BigInteger, nullable=False),
            Column("updated_at", DateTime, nullable=False),
            # the highest snapshot position read from the partition (positions.commit_order)
            Column(FLOOR, BigInteger, nullable=True),
        )
        self.deleted = Table(
            namespace + DELETED_TABLE,
            self.meta,
            Column("table_name", String(255), primary_key=True),
            Column("key", String(1024), primary_key=True),
            Column(POSITION, BigInteger, nullable=False),
            Column("deleted_at", DateTime, nullable=False),
        )
        # Per topic: has Debezium's snapshot been fully applied? `pending` means the snapshot's
        # last record was applied and `targets` holds the end offsets every partition must reach.
        self.snapshots = Table(
            namespace + SNAPSHOTS_TABLE,
            self.meta,
            Column("topic", String(255), primary_key=True),
            Column("state", String(16), nullable=False),
            Column(POSITION, BigInteger, nullable=False),  # the snapshot's source position
            Column("targets", String(4000), nullable=True),
            Column("updated_at", DateTime, nullable=False),
        )
        # The Connect schema of every state column, so any process rebuilds exact types.
        self.columns = Table(
            namespace + COLUMNS_TABLE,
            self.meta,
            Column("table_name", String(255), primary_key=True),
            Column("column_name", String(255), primary_key=True),
            Column("spec", String(4000), nullable=False),
        )
        # A rebuild's bookkeeping (mode, signal, progress) as JSON: in a shadow namespace, the
        # rebuild in progress; in the live state, the last one that finished.
        self.rebuilds = Table(
            namespace + REBUILD_TABLE,
            self.meta,
            Column("key", String(64), primary_key=True),
            Column("doc", Text, nullable=False),
            Column("updated_at", DateTime, nullable=False),
        )
        # Live state only: a generation number that every swap increments (the fence).
        self.meta_table = Table(
            META_TABLE,
            self.meta,
            Column("key", String(64), primary_key=True),
            Column("value", BigInteger, nullable=False),
        )
        self._tables: dict[str, Table] = {}
        self.generation = 0
        try:
            with self.engine.begin() as conn:
                self.meta.create_all(conn)
                self._migrate(conn)
                self.generation = self._generation(conn)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            if transient(exc):
                raise unavailable(exc, self.safe_url) from exc
            raise StateStoreError(f"cannot open state store {self.safe_url}: {reason(exc)}") from exc

    def _migrate(self, conn: Connection) -> None:
        """Bring bookkeeping tables made by an older ecst up to date (columns added since)."""
        offsets = self.offsets.name
        if FLOOR not in {c["name"] for c in inspect(conn).get_columns(offsets)}:
            guard = " IF NOT EXISTS" if self.dialect == "postgresql" else ""
            conn.execute(text(f'ALTER TABLE "{offsets}" ADD COLUMN{guard} {FLOOR} BIGINT'))

    def physical(self, table: str) -> str:
        """The database name of state table `table` in this namespace."""
        return self.ns + table

    def _generation(self, conn: Connection) -> int:
        value = conn.execute(select(self.meta_table.c.value)
                             .where(self.meta_table.c.key == "generation")).scalar()
        return int(value or 0)

    @_reachable
    def refresh(self) -> None:
        """Forget cached tables and take the current generation (after a swap)."""
        self._tables.clear()
        with self.engine.connect() as conn:
            self.generation = self._generation(conn)

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # ----- reads -------------------------------------------------------------------------
    @_reachable
    def stored_offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read for every (topic, partition) the state has applied."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(self.offsets.c.topic, self.offsets.c.partition,
                                       self.offsets.c.next_offset))
            return {(t, p): o for t, p, o in rows}

    def _floors(self, conn: Connection) -> dict[tuple[str, int], int]:
        o = self.offsets
        rows = conn.execute(select(o.c.topic, o.c.partition, o.c[FLOOR]).where(o.c[FLOOR].isnot(None)))
        return {(t, p): f for t, p, f in rows}

    @_reachable
    def snapshot_states(self) -> dict[str, SnapshotState]:
        """Per topic: the latest snapshot seen and how far it has been applied."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(self.snapshots.c.topic, self.snapshots.c.state,
                                       self.snapshots.c[POSITION], self.snapshots.c.targets))
            return {t: SnapshotState(st, pos, {int(p): o for p, o in json.loads(tg or "{}").items()})
                    for t, st, pos, tg in rows}

    @_reachable
    def mark_snapshot_complete(self, topic: str) -> None:
        """Record that `topic`'s state is a complete copy (idempotent)."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.engine.begin() as conn:
            stmt = self._insert(self.snapshots).values(topic=topic, state=SNAPSHOT_COMPLETE,
                                                       updated_at=now, **{POSITION: 0})
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["topic"], set_={"state": SNAPSHOT_COMPLETE, "updated_at": now}))

    def rebuild_record(self) -> dict[str, Any] | None:
        """The rebuild bookkeeping stored in this namespace, if any."""
        with self.engine.connect() as conn:
            doc = conn.execute(select(self.rebuilds.c.doc)
                               .where(self.rebuilds.c.key == "current")).scalar()
        return json.loads(doc) if doc else None

    @_reachable
    def rebuild_in_progress(self) -> dict[str, Any] | None:
        """The bookkeeping of a rebuild writing this state's shadow copy, if one is running;
        read-only (creates nothing when there is no shadow)."""
        name = SHADOW + REBUILD_TABLE
        with self.engine.connect() as conn:
            if not inspect(conn).has_table(name):
                return None
            doc = conn.execute(text(f'SELECT doc FROM "{name}" WHERE key = \'current\'')).scalar()
        return json.loads(doc) if doc else None

    def save_rebuild_record(self, doc: dict[str, Any], conn: Connection | None = None) -> None:
        if conn is None:
            with self.engine.begin() as own:
                return self.save_rebuild_record(doc, own)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        stmt = self._insert(self.rebuilds).values(key="current", doc=json.dumps(doc), updated_at=now)
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"],
                                                set_={"doc": stmt.excluded.doc, "updated_at": now}))
        return None

    def begin_rebuild(self, offsets: dict[tuple[str, int], int], doc: dict[str, Any]) -> None:
        """Start an empty shadow copy at `offsets` with its bookkeeping, in one transaction."""
        if not self.ns:
            raise StateStoreError("begin_rebuild() is for a shadow namespace, not the live state")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.engine.begin() as conn:
            if offsets:
                conn.execute(self.offsets.insert(), [
                    {"topic": t, "partition": p, "next_offset": o, "updated_at": now}
                    for (t, p), o in sorted(offsets.items())])
            self.save_rebuild_record(doc, conn)

    def discard(self) -> None:
        """Drop everything in this (shadow) namespace: its tables and its bookkeeping."""
        if not self.ns:
            raise StateStoreError("discard() is for a shadow namespace, never the live state")
        tables = self.tables()
        with self.engine.begin() as conn:
            insp = inspect(conn)
            for t in tables:
                if insp.has_table(self.physical(t)):
                    conn.execute(text(f'DROP TABLE "{self.physical(t)}"'))
            for bookkeeping in (self.offsets, self.deleted, self.snapshots, self.columns, self.rebuilds):
                conn.execute(delete(bookkeeping))
        self._tables.clear()

    def merge_from(self, shadow: StateStore) -> int:
        """Apply every row of a shadow copy to this state, in one transaction, through the same
        guards as any event (a row never replaces a newer one, nor resurrects a newer delete).
        For a filtered backfill: it touches only the keys the shadow holds. Returns rows offered."""
        events: list[ChangeEvent] = []
        for name in shadow.tables():
            with shadow.engine.connect() as conn:
                fields = shadow._recorded_fields(conn, name)
                table = shadow.load_table(name, conn)
                rows = [dict(r._mapping) for r in conn.execute(select(table))]
            key_cols = [c.name for c in table.primary_key.columns]
            field_list = tuple(fields.values())
            key_fields = tuple(fields[k] for k in key_cols if k in fields)
            for row in rows:
                position = row.pop(POSITION)
                events.append(ChangeEvent("r", name, {k: row[k] for k in key_cols}, row, position,
                                          "", 0, 0, snapshot="incremental", fields=field_list,
                                          key_fields=key_fields))
        if events:
            self.apply(events, {})
        return len(events)

    @_reachable
    def purge_tombstones(self, older_than: dt.datetime) -> int:
        """Forget delete tombstones recorded before `older_than`; returns how many."""
        with self.engine.begin() as conn:
            result = conn.execute(delete(self.deleted).where(self.deleted.c.deleted_at < older_than))
            return result.rowcount or 0

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a state table, typed as created, without the bookkeeping columns."""
        t = self.load_table(table)
        with self.engine.connect() as conn:
            cols = [c for c in t.columns if c.name != POSITION]
            return [dict(r._mapping) for r in conn.execute(select(*cols))]

    def count(self, table: str) -> int:
        """Rows in a state table (0 when it does not exist)."""
        if not self.has_table(table):
            return 0
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(self.load_table(table, conn))).scalar_one()

    def has_table(self, table: str) -> bool:
        with self.engine.connect() as conn:
            return inspect(conn).has_table(self.physical(table))

    def tables(self) -> list[str]:
        """The state tables this store has created (logical names)."""
        with self.engine.connect() as conn:
            return sorted({t for (t,) in conn.execute(select(self.columns.c.table_name).distinct())})

    # ----- writes ------------------------------------------------------------------------
    @_reachable
    def apply(
        self,
        events: Sequence[ChangeEvent],
        next_offsets: dict[tuple[str, int], int],
        snapshots: dict[str, SnapshotState] | None = None,
    ) -> ApplyStats:
        """Apply a batch and store `next_offsets` (and snapshot progress) in the same transaction."""
        try:
            return self._apply_batch(events, next_offsets, snapshots)
        except Exception:
            # The transaction rolled back, DDL included: a table it created or extended must be
            # looked up again, or the next batch would write to a table that does not exist.
            self._tables.clear()
            raise

    def _apply_batch(
        self,
        events: Sequence[ChangeEvent],
        next_offsets: dict[tuple[str, int], int],
        snapshots: dict[str, SnapshotState] | None,
    ) -> ApplyStats:
        stats = ApplyStats()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # A swap (`promote`) holds this lock exclusively: it waits for batches in progress,
                # and a batch that waited for it sees the new generation below. (SQLite's BEGIN
                # IMMEDIATE already serialises the two.)
                conn.execute(text(f"SELECT pg_advisory_xact_lock_shared({_PROMOTE_LOCK})"))
            if self._generation(conn) != self.generation:
                raise StaleStateError("the state was swapped by a rebuild: re-read offsets and go on")
            floors: dict[tuple[str, int], int] = {}
            if any(e.anchor or e.opening for e in events):
                events, floors = commit_order(events, self._floors(conn))
            for step in plan_batch(events):
                if step.truncate is not None:
                    self._truncate(conn, step.truncate, stats)
                for changes in step.tables.values():
                    self._apply_table(conn, changes, stats, now)
            if next_offsets:
                rows = [
                    {"topic": t, "partition": p, "next_offset": o, "updated_at": now,
                     FLOOR: floors.get((t, p))}
                    for (t, p), o in sorted(next_offsets.items())
                ]
                stmt = self._insert(self.offsets)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["topic", "partition"],
                    set_={"next_offset": stmt.excluded.next_offset,
                          "updated_at": stmt.excluded.updated_at,
                          FLOOR: func.coalesce(stmt.excluded[FLOOR], self.offsets.c[FLOOR])},
                )
                conn.execute(stmt, rows)
            for topic, snap in (snapshots or {}).items():
                stmt = self._insert(self.snapshots)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["topic"],
                    set_={"state": stmt.excluded.state, POSITION: stmt.excluded[POSITION],
                          "targets": stmt.excluded.targets, "updated_at": stmt.excluded.updated_at},
                )
                conn.execute(stmt, {"topic": topic, "state": snap.state, POSITION: snap.position,
                                    "updated_at": now,
                                    "targets": json.dumps({str(p): o for p, o in snap.targets.items()})})
        return stats

    def _table_for(self, conn: Connection, changes: TableChanges) -> Table:
        """The state table for these events: created from their schema, or extended with
        columns the source added (recorded in ecst_columns so later processes know the types)."""
        sample = max(changes.latest.values(), key=lambda e: len(e.fields))
        name = changes.table
        fields = {f.name: f for f in sample.fields}
        key_fields = {f.name: f for f in sample.key_fields}
        columns: dict[str, Field] = {}
        for k, v in sample.key.items():
            columns[k] = key_fields.get(k) or fields.get(k) or Field.for_sample(k, v)
        for e in changes.latest.values():
            for c, v in (e.after or {}).items():
                if c not in columns and (c in fields or v is not None or not fields):
                    columns[c] = fields.get(c) or Field.for_sample(c, v)
        known = self._tables.get(name)
        if known is not None and set(columns) <= {c.name for c in known.columns}:
            return known
        if self.dialect == "postgresql":
            # Several consumers (a group's members) may share this database: one at a time
            # creates or alters a table. SQLite's BEGIN IMMEDIATE already serialises writers.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": f"ecst:{name}"})
        phys = self.physical(name)
        insp = inspect(conn)
        existing = {c["name"] for c in insp.get_columns(phys)} if insp.has_table(phys) else None
        recorded = self._recorded_fields(conn, name)
        table = self._build_table(phys, {**columns, **recorded}, set(sample.key))
        if existing is None:
            table.metadata.create_all(conn)
            log.info("created state table %s (%d columns)", phys, len(columns))
        else:
            missing_keys = set(sample.key) - existing
            if missing_keys:
                raise StateStoreError(
                    f"state table {name!r} exists without key column(s) {sorted(missing_keys)}: "
                    "drop it or map the source to another table"
                )
            for c in table.columns:
                if c.name not in existing:
                    ddl = c.type.compile(dialect=conn.dialect)
                    conn.execute(text(f'ALTER TABLE "{phys}" ADD COLUMN "{c.name}" {ddl}'))
                    log.info("added column %s.%s (%s)", phys, c.name, ddl)
        new = [f for c, f in columns.items() if c not in recorded]
        if new:
            conn.execute(self._insert(self.columns).on_conflict_do_nothing(), [
                {"table_name": name, "column_name": f.name, "spec": json.dumps(f.to_schema())}
                for f in new
            ])
        self._tables[name] = table
        return table

    def _recorded_fields(self, conn: Connection, table: str) -> dict[str, Field]:
        rows = conn.execute(select(self.columns.c.column_name, self.columns.c.spec)
                            .where(self.columns.c.table_name == table))
        return {c: Field.from_schema(json.loads(spec)) for c, spec in rows}

    @staticmethod
    def _build_table(name: str, fields: dict[str, Field], key: set[str]) -> Table:
        return Table(
            name,
            MetaData(),
            # autoincrement=False: the key comes from the source, never a sequence of the state's
            *[Column(c, sql_type(f), primary_key=c in key, nullable=c not in key, autoincrement=False)
              for c, f in fields.items()],
            Column(POSITION, BigInteger, nullable=False),
        )

    def load_table(self, name: str, conn: Connection | None = None) -> Table:
        """A state table with the exact column types it was created with."""
        if conn is None:
            with self.engine.connect() as own:
                return self.load_table(name, own)
        recorded = self._recorded_fields(conn, name)
        phys = self.physical(name)
        if not recorded:
            return Table(phys, MetaData(), autoload_with=conn)
        key = set(inspect(conn).get_pk_constraint(phys)["constrained_columns"])
        existing = {c["name"] for c in inspect(conn).get_columns(phys)}
        return self._build_table(phys, {c: f for c, f in recorded.items() if c in existing}, key)

    def _tombstone_positions(
        self, conn: Connection, table: str, keys: list[str]
    ) -> dict[str, int]:
        found: dict[str, int] = {}
        d = self.deleted
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            rows = conn.execute(
                select(d.c.key, d.c[POSITION]).where(d.c.table_name == table, d.c.key.in_(chunk))
            )
            found.update({k: p for k, p in rows})
        return found

    def _apply_table(
        self, conn: Connection, changes: TableChanges, stats: ApplyStats, now: dt.datetime
    ) -> None:
        upserts, deletes = changes.upserts, changes.deletes
        if upserts:
            table = self._table_for(conn, changes)
        elif changes.table in self._tables:
            table = self._tables[changes.table]
        elif inspect(conn).has_table(self.physical(changes.table)):
            table = self.load_table(changes.table, conn)
        else:
            table = None  # only deletes, for a table never created: nothing to delete
        if upserts:
            tomb = self._tombstone_positions(conn, changes.table, [key_text(e.key) for e in upserts])
            live = []
            for e in upserts:
                if tomb.get(key_text(e.key), -1) > e.position:
                    stats.stale += 1
                else:
                    live.append(e)
            self._upsert(conn, table, live, [c.name for c in table.primary_key.columns], stats)
        if deletes:
            self._delete(conn, changes.table, table, deletes, stats, now)

    def _upsert(
        self,
        conn: Connection,
        table: Table,
        events: Iterable[ChangeEvent],
        key_cols: list[str],
        stats: ApplyStats,
    ) -> None:
        # Rows whose unchanged-TOAST columns differ need different SET lists: group by them.
        groups: dict[frozenset[str], list[dict[str, Any]]] = {}
        ops: dict[frozenset[str], Counter] = {}
        names = [c.name for c in table.columns if c.name != POSITION]
        for e in events:
            after = e.after or {}
            unchanged = frozenset(c for c, v in after.items() if v is UNCHANGED)
            row = {c: (None if c in unchanged else after.get(c, e.key.get(c))) for c in names}
            row[POSITION] = e.position
            groups.setdefault(unchanged, []).append(row)
            ops.setdefault(unchanged, Counter())[e.op] += 1
        for unchanged, rows in groups.items():
            stmt = self._insert(table)
            set_ = {c: stmt.excluded[c] for c in names if c not in key_cols and c not in unchanged}
            set_[POSITION] = stmt.excluded[POSITION]
            stmt = stmt.on_conflict_do_update(
                index_elements=key_cols,
                set_=set_,
                where=table.c[POSITION] <= stmt.excluded[POSITION],
            )
            result = conn.execute(stmt, rows)
            for op, n in ops[unchanged].items():
                stats.by_table_op[(op, table.name)] += n
            if result.rowcount is not None and 0 <= result.rowcount < len(rows):
                stats.stale += len(rows) - result.rowcount

    def _delete(
        self,
        conn: Connection,
        name: str,
        table: Table | None,
        events: list[ChangeEvent],
        stats: ApplyStats,
        now: dt.datetime,
    ) -> None:
        guarded = [e for e in events if e.position is not None]
        unguarded = [e for e in events if e.position is None]
        if table is not None:
            key_cols = [c.name for c in table.primary_key.columns]
            where_key = and_(*[table.c[c] == bindparam(f"k_{c}") for c in key_cols])
            if guarded:
                conn.execute(delete(table).where(where_key, table.c[POSITION] <= bindparam("pos")),
                             [{**{f"k_{c}": e.key[c] for c in key_cols}, "pos": e.position}
                              for e in guarded])
            if unguarded:  # deletes known only from Kafka tombstones: offset order is their order
                conn.execute(delete(table).where(where_key),
                             [{f"k_{c}": e.key[c] for c in key_cols} for e in unguarded])
        if guarded:  # a tombstone record, so that a replayed older create cannot resurrect it
            tomb = self._insert(self.deleted)
            tomb = tomb.on_conflict_do_update(
                index_elements=["table_name", "key"],
                set_={POSITION: tomb.excluded[POSITION], "deleted_at": tomb.excluded.deleted_at},
                where=self.deleted.c[POSITION] <= tomb.excluded[POSITION],
            )
            conn.execute(tomb, [{"table_name": name, "key": key_text(e.key), POSITION: e.position,
                                 "deleted_at": now} for e in guarded])
        stats.by_table_op[("d", name)] += len(events)

    def _truncate(self, conn: Connection, event: ChangeEvent, stats: ApplyStats) -> None:
        """TRUNCATE in the source: remove every row not newer than the truncate."""
        if not inspect(conn).has_table(self.physical(event.table)):
            return
        t = sql_table(self.physical(event.table), sql_column(POSITION))
        conn.execute(delete(t).where(t.c[POSITION] <= event.position))
        stats.by_table_op[("t", event.table)] += 1

    def promote(self, shadow: StateStore) -> list[str]:
        """Swap a shadow copy in, in one transaction: its tables replace the live ones, its
        offsets, delete tombstones, column types and snapshot state replace theirs, and the
        generation moves on so that a live consumer re-reads its offsets before its next write.
        Returns the tables swapped."""
        if shadow.engine.url != self.engine.url or not shadow.ns or self.ns:
            raise StateStoreError("promote() takes a shadow store of the same database")
        tables = shadow.tables()
        topics = sorted(shadow.stored_offsets())
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text(f"SELECT pg_advisory_xact_lock({_PROMOTE_LOCK})"))
            insp = inspect(conn)
            for t in tables:
                live, shadowed = self.physical(t), shadow.physical(t)
                if insp.has_table(live):
                    conn.execute(text(f'DROP TABLE "{live}"'))
                conn.execute(text(f'ALTER TABLE "{shadowed}" RENAME TO "{live}"'))
                if self.dialect == "postgresql":
                    conn.execute(text(f'ALTER INDEX IF EXISTS "{shadowed}_pkey" RENAME TO "{live}_pkey"'))
            topic_names = sorted({t for t, _ in topics})
            for mine, theirs, column, keys in (
                (self.offsets, shadow.offsets, "topic", topic_names),
                (self.snapshots, shadow.snapshots, "topic", topic_names),
                (self.deleted, shadow.deleted, "table_name", tables),
                (self.columns, shadow.columns, "table_name", tables),
            ):
                conn.execute(delete(mine).where(mine.c[column].in_(keys)))
                conn.execute(mine.insert().from_select(list(theirs.c.keys()), select(theirs)))
                conn.execute(text(f'DROP TABLE "{theirs.name}"'))
            conn.execute(text(f'DROP TABLE IF EXISTS "{shadow.rebuilds.name}"'))
            stmt = self._insert(self.meta_table).values(key="generation", value=self._generation(conn) + 1)
            conn.execute(stmt.on_conflict_do_update(index_elements=["key"],
                                                    set_={"value": stmt.excluded.value}))
        self.refresh()
        shadow.close()
        return tables

"""The private state store: open the state database, read it, and apply each batch with its offsets.

Every batch is applied in one transaction together with the Kafka offsets it advances to, so
the state and the offsets can never disagree. The batch's writes and their position guard are in
writes.py (the SQLAlchemy reference), writes_sqlite.py (SQLite's prepared SQL) and
writes_postgres.py (PostgreSQL: compiled statements by executemany, or COPY and a merge), chosen
per dialect in writers.py; the state tables are in tables.py, the bookkeeping tables in schema.py, and
a rebuild's shadow copy (swap, merge, discard) in shadow.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Table, create_engine, delete, event, func, inspect, select
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ecst.consumer import shadow as shadow_copy
from ecst.consumer.events import ChangeEvent, Deferral
from ecst.consumer.outage import reason, store_error, transient, unavailable
from ecst.consumer.pg_decode import row_check
from ecst.consumer.plan import plan_batch
from ecst.consumer.positions import commit_order
from ecst.consumer.schema import FLOOR, POSITION, Bookkeeping, dialect_insert
from ecst.consumer.snapshots import SNAPSHOT_COMPLETE, SnapshotState
from ecst.consumer.tables import StateTables
from ecst.consumer.writers import make_writer
from ecst.consumer.writes import ApplyStats
from ecst.exceptions import StaleStateError, StateStoreError  # StaleStateError: re-exported

R = TypeVar("R")


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
            error = store_error(exc, self.safe_url)
            if error is not None:
                raise error from exc
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


def _utcnow() -> dt.datetime:
    """The batch timestamp: naive UTC."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class StateStore:
    """A SQLAlchemy database holding the consumer's private state.

    `namespace` prefixes every table it owns: the live state has none; a rebuild writes its
    shadow copy under `ecst_shadow__` in the same database, and `promote` swaps it in.
    `writer` names the batch writer (writers.py); by default the dialect's own.
    """

    def __init__(self, url: str, *, echo: bool = False, namespace: str = "",
                 writer: str | None = None) -> None:
        self.ns = namespace
        self.engine = make_engine(url, echo=echo)
        self.url = self.engine.url.render_as_string(hide_password=False)
        self.dialect = self.engine.dialect.name
        self.writer = make_writer(self.dialect, writer)
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        self.book = Bookkeeping(namespace)  # the ecst_* tables (schema.py)
        self.state_tables = StateTables(namespace, self.book.columns)  # the state's tables (tables.py)
        self.generation = 0
        try:
            with self.engine.begin() as conn:
                self.book.create(conn)
                self.generation = self.book.generation(conn)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            if transient(exc):
                raise unavailable(exc, self.safe_url) from exc
            raise StateStoreError(f"cannot open state store {self.safe_url}: {reason(exc)}") from exc

    @property
    def deferral(self) -> Deferral | None:
        """How a decoder may leave rows' decoding to this store's database (`events.decode`'s
        `defer`): PostgreSQL's bulk writer decodes the columns `pg_decode` covers; None: none."""
        return row_check if getattr(self.writer, "takes_deferred", False) else None

    @property
    def columns(self) -> Table:
        """The ecst_columns table: each state column's recorded Connect schema (verify reads it)."""
        return self.book.columns

    def physical(self, table: str) -> str:
        """The database name of state table `table` in this namespace."""
        return self.state_tables.physical(table)

    @_reachable
    def refresh(self) -> None:
        """Forget cached tables and take the current generation (after a swap)."""
        self.state_tables.forget()
        with self.engine.connect() as conn:
            self.generation = self.book.generation(conn)

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # ----- reads -------------------------------------------------------------------------
    @_reachable
    def stored_offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read for every (topic, partition) the state has applied."""
        o = self.book.offsets
        with self.engine.connect() as conn:
            rows = conn.execute(select(o.c.topic, o.c.partition, o.c.next_offset))
            return {(t, p): n for t, p, n in rows}

    def _floors(self, conn: Connection) -> dict[tuple[str, int], int]:
        o = self.book.offsets
        rows = conn.execute(select(o.c.topic, o.c.partition, o.c[FLOOR]).where(o.c[FLOOR].isnot(None)))
        return {(t, p): f for t, p, f in rows}

    @_reachable
    def snapshot_states(self) -> dict[str, SnapshotState]:
        """Per topic: the latest snapshot seen and how far it has been applied."""
        s = self.book.snapshots
        with self.engine.connect() as conn:
            rows = conn.execute(select(s.c.topic, s.c.state, s.c[POSITION], s.c.targets))
            return {t: SnapshotState(st, pos, {int(p): o for p, o in json.loads(tg or "{}").items()})
                    for t, st, pos, tg in rows}

    @_reachable
    def mark_snapshot_complete(self, topic: str) -> None:
        """Record that `topic`'s state is a complete copy (idempotent)."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.engine.begin() as conn:
            stmt = dialect_insert(conn, self.book.snapshots).values(
                topic=topic, state=SNAPSHOT_COMPLETE, updated_at=now, **{POSITION: 0})
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["topic"], set_={"state": SNAPSHOT_COMPLETE, "updated_at": now}))

    @_reachable
    def purge_tombstones(self, older_than: dt.datetime) -> int:
        """Forget delete tombstones recorded before `older_than`; returns how many."""
        d = self.book.deleted
        with self.engine.begin() as conn:
            result = conn.execute(delete(d).where(d.c.deleted_at < older_than))
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
            return self.state_tables.names(conn)

    def load_table(self, name: str, conn: Connection | None = None) -> Table:
        """A state table with the exact column types it was created with."""
        if conn is None:
            with self.engine.connect() as own:
                return self.state_tables.load(own, name)
        return self.state_tables.load(conn, name)

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
            self.state_tables.forget()
            raise

    def _apply_batch(
        self,
        events: Sequence[ChangeEvent],
        next_offsets: dict[tuple[str, int], int],
        snapshots: dict[str, SnapshotState] | None,
    ) -> ApplyStats:
        now = _utcnow()
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # A swap (`promote`) holds this lock exclusively: it waits for batches in progress,
                # and a batch that waited for it sees the new generation below. (SQLite's BEGIN
                # IMMEDIATE already serialises the two.)
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({shadow_copy.PROMOTE_LOCK})")
            writer = self.writer(conn, self.state_tables, self.book, now)
            if writer.generation() != self.generation:
                raise StaleStateError("the state was swapped by a rebuild: re-read offsets and go on")
            floors: dict[tuple[str, int], int] = {}
            if any(e.anchor or e.opening for e in events):
                events, floors = commit_order(events, self._floors(conn))
            for step in plan_batch(events):
                writer.write(step)
            if next_offsets:
                writer.save_offsets(next_offsets, floors)
            for topic, snap in (snapshots or {}).items():
                writer.save_snapshot(topic, snap)
        return writer.stats

    # ----- a rebuild's shadow copy (shadow.py) -------------------------------------------
    def rebuild_record(self) -> dict[str, Any] | None:
        """The rebuild bookkeeping stored in this namespace, if any."""
        return shadow_copy.rebuild_record(self)

    def save_rebuild_record(self, doc: dict[str, Any], conn: Connection | None = None) -> None:
        shadow_copy.save_rebuild_record(self, doc, conn)

    @_reachable
    def rebuild_in_progress(self) -> dict[str, Any] | None:
        """The bookkeeping of a rebuild writing this state's shadow copy, if one is running."""
        return shadow_copy.rebuild_in_progress(self)

    def begin_rebuild(self, offsets: dict[tuple[str, int], int], doc: dict[str, Any]) -> None:
        """Start an empty shadow copy at `offsets` with its bookkeeping, in one transaction."""
        shadow_copy.begin_rebuild(self, offsets, doc)

    def discard(self) -> None:
        """Drop everything in this (shadow) namespace: its tables and its bookkeeping."""
        shadow_copy.discard(self)

    def merge_from(self, shadow: StateStore) -> int:
        """Apply every row of a shadow copy to this state through the usual guards; rows offered."""
        return shadow_copy.merge(self, shadow)

    def promote(self, shadow: StateStore) -> list[str]:
        """Swap a shadow copy in, in one transaction; returns the tables swapped."""
        return shadow_copy.promote(self, shadow)

"""A rebuild's shadow copy: start it, keep its bookkeeping, then swap it in, merge it or discard it.

The shadow copy is a `StateStore` on the live state's database under the namespace `SHADOW`: its
state tables and its own bookkeeping tables (schema.py), all prefixed. A full rebuild swaps it
for the live state (`promote`); a filtered one merges its rows into the live state (`merge`).
`StateStore` offers each function here as a method of the same name (`merge` as `merge_from`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, inspect, select, text
from sqlalchemy.engine import Connection

from ecst.consumer.events import ChangeEvent
from ecst.consumer.schema import POSITION, REBUILD_TABLE, dialect_insert
from ecst.exceptions import StateStoreError

if TYPE_CHECKING:
    from ecst.consumer.store import StateStore

SHADOW = "ecst_shadow__"  # the namespace of a rebuild's shadow copy
PROMOTE_LOCK = "hashtext('ecst:promote')"  # Postgres advisory lock: a swap against batches


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# ----- the rebuild's bookkeeping ------------------------------------------------------------
def rebuild_record(store: StateStore) -> dict[str, Any] | None:
    """The rebuild bookkeeping stored in `store`'s namespace, if any: in a shadow namespace the
    rebuild in progress, in the live state the last one that finished."""
    rebuilds = store.book.rebuilds
    with store.engine.connect() as conn:
        doc = conn.execute(select(rebuilds.c.doc).where(rebuilds.c.key == "current")).scalar()
    return json.loads(doc) if doc else None


def save_rebuild_record(store: StateStore, doc: dict[str, Any], conn: Connection | None = None) -> None:
    """Store `doc` as the rebuild bookkeeping of `store`'s namespace (in `conn`'s transaction)."""
    if conn is None:
        with store.engine.begin() as own:
            return save_rebuild_record(store, doc, own)
    now = _now()
    stmt = dialect_insert(conn, store.book.rebuilds)
    stmt = stmt.values(key="current", doc=json.dumps(doc), updated_at=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"],
                                            set_={"doc": stmt.excluded.doc, "updated_at": now}))
    return None


def rebuild_in_progress(live: StateStore) -> dict[str, Any] | None:
    """The bookkeeping of a rebuild writing `live`'s shadow copy, if one is running; read-only
    (creates nothing when there is no shadow)."""
    name = SHADOW + REBUILD_TABLE
    with live.engine.connect() as conn:
        if not inspect(conn).has_table(name):
            return None
        doc = conn.execute(text(f'SELECT doc FROM "{name}" WHERE key = \'current\'')).scalar()
    return json.loads(doc) if doc else None


# ----- the shadow copy's life ----------------------------------------------------------------
def begin_rebuild(shadow: StateStore, offsets: dict[tuple[str, int], int], doc: dict[str, Any]) -> None:
    """Start an empty shadow copy at `offsets` with its bookkeeping, in one transaction."""
    if not shadow.ns:
        raise StateStoreError("begin_rebuild() is for a shadow namespace, not the live state")
    now = _now()
    with shadow.engine.begin() as conn:
        if offsets:
            conn.execute(shadow.book.offsets.insert(), [
                {"topic": t, "partition": p, "next_offset": o, "updated_at": now}
                for (t, p), o in sorted(offsets.items())])
        save_rebuild_record(shadow, doc, conn)


def discard(shadow: StateStore) -> None:
    """Drop everything in a shadow namespace: its tables and its bookkeeping."""
    if not shadow.ns:
        raise StateStoreError("discard() is for a shadow namespace, never the live state")
    tables = shadow.tables()
    book = shadow.book
    with shadow.engine.begin() as conn:
        insp = inspect(conn)
        for t in tables:
            if insp.has_table(shadow.physical(t)):
                conn.execute(text(f'DROP TABLE "{shadow.physical(t)}"'))
        for bookkeeping in (book.offsets, book.deleted, book.snapshots, book.columns, book.rebuilds):
            conn.execute(delete(bookkeeping))
    shadow.state_tables.forget()


def merge(live: StateStore, shadow: StateStore) -> int:
    """Apply every row of a shadow copy to the live state, in one transaction, through the same
    guards as any event (a row never replaces a newer one, nor resurrects a newer delete).
    For a filtered backfill: it touches only the keys the shadow holds. Returns rows offered."""
    events: list[ChangeEvent] = []
    for name in shadow.tables():
        with shadow.engine.connect() as conn:
            fields = shadow.state_tables.recorded_fields(conn, name)
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
        live.apply(events, {})
    return len(events)


def promote(live: StateStore, shadow: StateStore) -> list[str]:
    """Swap a shadow copy in, in one transaction: its tables replace the live ones, its
    offsets, delete tombstones, column types and snapshot state replace theirs, and the
    generation moves on so that a live consumer re-reads its offsets before its next write.
    Returns the tables swapped."""
    if shadow.engine.url != live.engine.url or not shadow.ns or live.ns:
        raise StateStoreError("promote() takes a shadow store of the same database")
    tables = shadow.tables()
    topics = sorted(shadow.stored_offsets())
    mine, theirs = live.book, shadow.book
    with live.engine.begin() as conn:
        if live.dialect == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({PROMOTE_LOCK})"))
        insp = inspect(conn)
        for t in tables:
            live_name, shadowed = live.physical(t), shadow.physical(t)
            if insp.has_table(live_name):
                conn.execute(text(f'DROP TABLE "{live_name}"'))
            conn.execute(text(f'ALTER TABLE "{shadowed}" RENAME TO "{live_name}"'))
            if live.dialect == "postgresql":
                conn.execute(text(f'ALTER INDEX IF EXISTS "{shadowed}_pkey" RENAME TO "{live_name}_pkey"'))
        topic_names = sorted({t for t, _ in topics})
        for to, source, column, keys in (
            (mine.offsets, theirs.offsets, "topic", topic_names),
            (mine.snapshots, theirs.snapshots, "topic", topic_names),
            (mine.deleted, theirs.deleted, "table_name", tables),
            (mine.columns, theirs.columns, "table_name", tables),
        ):
            conn.execute(delete(to).where(to.c[column].in_(keys)))
            conn.execute(to.insert().from_select(list(source.c.keys()), select(source)))
            conn.execute(text(f'DROP TABLE "{source.name}"'))
        conn.execute(text(f'DROP TABLE IF EXISTS "{theirs.rebuilds.name}"'))
        stmt = dialect_insert(conn, mine.meta_table).values(key="generation", value=mine.generation(conn) + 1)
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value}))
    live.refresh()
    shadow.close()
    return tables

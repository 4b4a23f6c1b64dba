"""State tables: created from the events' Connect schemas, extended with new columns, read back typed.

Every state column's Connect schema is recorded in `ecst_columns`, so that any process (a
restart, the service, `ecst verify`) rebuilds the exact column types the table was created with.
"""

from __future__ import annotations

import json
import logging

from sqlalchemy import BigInteger, Column, MetaData, Table, inspect, select, text
from sqlalchemy.engine import Connection

from ecst.consumer.plan import TableChanges
from ecst.consumer.schema import POSITION, dialect_insert
from ecst.consumer.types import Field, sql_type
from ecst.exceptions import StateStoreError

log = logging.getLogger(__name__)


def build_table(name: str, fields: dict[str, Field], key: set[str]) -> Table:
    """A state table `name` with a column per field, primary key `key`, and the position column."""
    return Table(
        name,
        MetaData(),
        # autoincrement=False: the key comes from the source, never a sequence of the state's
        *[Column(c, sql_type(f), primary_key=c in key, nullable=c not in key, autoincrement=False)
          for c, f in fields.items()],
        Column(POSITION, BigInteger, nullable=False),
    )


class StateTables:
    """The state tables of one namespace (`namespace` prefixes their database names), with the
    ones this process created or extended cached; `columns` is the namespace's ecst_columns."""

    def __init__(self, namespace: str, columns: Table) -> None:
        self.ns = namespace
        self.columns = columns
        self._cache: dict[str, Table] = {}

    def physical(self, table: str) -> str:
        """The database name of state table `table` in this namespace."""
        return self.ns + table

    def forget(self) -> None:
        """Drop the cache: after a rolled-back batch (its DDL undone), a swap or a discard."""
        self._cache.clear()

    def names(self, conn: Connection) -> list[str]:
        """The state tables created in this namespace (logical names)."""
        return sorted({t for (t,) in conn.execute(select(self.columns.c.table_name).distinct())})

    def recorded_fields(self, conn: Connection, table: str) -> dict[str, Field]:
        """The Connect schema recorded for each column of `table`."""
        rows = conn.execute(select(self.columns.c.column_name, self.columns.c.spec)
                            .where(self.columns.c.table_name == table))
        return {c: Field.from_schema(json.loads(spec)) for c, spec in rows}

    def load(self, conn: Connection, name: str) -> Table:
        """A state table with the exact column types it was created with."""
        recorded = self.recorded_fields(conn, name)
        phys = self.physical(name)
        if not recorded:
            return Table(phys, MetaData(), autoload_with=conn)
        key = set(inspect(conn).get_pk_constraint(phys)["constrained_columns"])
        existing = {c["name"] for c in inspect(conn).get_columns(phys)}
        return build_table(phys, {c: f for c, f in recorded.items() if c in existing}, key)

    def existing(self, conn: Connection, name: str) -> Table | None:
        """State table `name` if it exists (None: never created)."""
        if name in self._cache:
            return self._cache[name]
        if inspect(conn).has_table(self.physical(name)):
            return self.load(conn, name)
        return None

    def for_changes(self, conn: Connection, changes: TableChanges) -> Table:
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
            if e.after is None or e.after.keys() <= columns.keys():
                continue  # no column to add: the usual case, checked without a loop per column
            for c, v in e.after.items():
                if c not in columns and (c in fields or v is not None or not fields):
                    columns[c] = fields.get(c) or Field.for_sample(c, v)
        known = self._cache.get(name)
        if known is not None and set(columns) <= {c.name for c in known.columns}:
            return known
        if conn.dialect.name == "postgresql":
            # Several consumers (a group's members) may share this database: one at a time
            # creates or alters a table. SQLite's BEGIN IMMEDIATE already serialises writers.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": f"ecst:{name}"})
        phys = self.physical(name)
        insp = inspect(conn)
        existing = {c["name"] for c in insp.get_columns(phys)} if insp.has_table(phys) else None
        recorded = self.recorded_fields(conn, name)
        table = build_table(phys, {**columns, **recorded}, set(sample.key))
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
            for col in table.columns:
                if col.name not in existing:
                    ddl = col.type.compile(dialect=conn.dialect)
                    conn.execute(text(f'ALTER TABLE "{phys}" ADD COLUMN "{col.name}" {ddl}'))
                    log.info("added column %s.%s (%s)", phys, col.name, ddl)
        new = [f for c, f in columns.items() if c not in recorded]
        if new:
            conn.execute(dialect_insert(conn, self.columns).on_conflict_do_nothing(), [
                {"table_name": name, "column_name": f.name, "spec": json.dumps(f.to_schema())}
                for f in new
            ])
        self._cache[name] = table
        return table

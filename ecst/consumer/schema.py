"""The bookkeeping tables (`ecst_*`) each state namespace keeps beside its state, and their migrations.

- `ecst_offsets`: the next Kafka offset to read per (topic, partition), written in the same
  transaction as the rows, with the partition's snapshot floor (`positions.commit_order`).
- `ecst_deleted`: delete tombstones, so that a replayed older create cannot resurrect a row.
- `ecst_snapshots`: per topic, how far Debezium's latest snapshot has been applied.
- `ecst_columns`: the Connect schema of every state column, so any process rebuilds exact types.
- `ecst_rebuild`: a rebuild's bookkeeping (shadow.py).
- `ecst_meta` (live state only): the generation that every swap increments, the writers' fence.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

POSITION = "_ecst_position"  # the source position of every state row and tombstone
FLOOR = "position_floor"
OFFSETS_TABLE = "ecst_offsets"
DELETED_TABLE = "ecst_deleted"
SNAPSHOTS_TABLE = "ecst_snapshots"
COLUMNS_TABLE = "ecst_columns"
META_TABLE = "ecst_meta"
REBUILD_TABLE = "ecst_rebuild"
BOOKKEEPING_LOCK = "hashtext('ecst:bookkeeping')"  # Postgres advisory lock: creating the ecst_* tables


def dialect_insert(conn: Connection, table: Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT into `table` that takes ON CONFLICT clauses, in the dialect of `conn`."""
    return (sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert)(table)


class Bookkeeping:
    """The bookkeeping tables of one namespace (`namespace` prefixes their names; `ecst_meta` is
    shared, unprefixed)."""

    def __init__(self, namespace: str) -> None:
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

    def create(self, conn: Connection) -> None:
        """Create the tables that do not exist yet and migrate those an older ecst made."""
        if conn.dialect.name == "postgresql":
            # Several consumers (a group's members) may open one fresh database at the same moment:
            # without the lock, two would both find a table missing and the second CREATE would fail
            # ('relation "ecst_offsets" already exists'). The lock ends with the transaction, after
            # which the tables are committed and the others find them. (SQLite: BEGIN IMMEDIATE.)
            conn.execute(text(f"SELECT pg_advisory_xact_lock({BOOKKEEPING_LOCK})"))
        self.meta.create_all(conn)
        self._migrate(conn)

    def _migrate(self, conn: Connection) -> None:
        """Bring bookkeeping tables made by an older ecst up to date (columns added since)."""
        offsets = self.offsets.name
        if FLOOR not in {c["name"] for c in inspect(conn).get_columns(offsets)}:
            guard = " IF NOT EXISTS" if conn.dialect.name == "postgresql" else ""
            conn.execute(text(f'ALTER TABLE "{offsets}" ADD COLUMN{guard} {FLOOR} BIGINT'))

    def generation(self, conn: Connection) -> int:
        """The live state's current generation (0 before the first swap)."""
        value = conn.execute(select(self.meta_table.c.value)
                             .where(self.meta_table.c.key == "generation")).scalar()
        return int(value or 0)

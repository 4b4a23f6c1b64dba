"""Which batch writer applies a state store's batches: chosen here, once per store, by dialect.

- `sqlalchemy`: `writes.BatchWriter`, SQLAlchemy Core statements, any dialect: the reference;
- `sqlite`: `writes_sqlite`, SQL prepared once per state table and run by the driver's
  executemany, the values converted column by column;
- `postgresql`: `writes_postgres`, the reference's statements compiled once per state table and
  run by psycopg's executemany, or for a larger batch COPY into a temporary table and one guarded
  `INSERT ... SELECT ... ON CONFLICT ... WHERE`.
"""

from __future__ import annotations

from ecst.consumer.writes import BatchWriter, WriterFactory
from ecst.consumer.writes_postgres import PostgresWriters
from ecst.consumer.writes_sqlite import SqliteWriters
from ecst.exceptions import StateStoreError

WRITERS = ("sqlalchemy", "sqlite", "postgresql")
DEFAULT = {"sqlite": "sqlite", "postgresql": "postgresql"}  # by dialect


def make_writer(dialect: str, writer: str | None = None) -> WriterFactory:
    """The writer of every batch of a state store on `dialect`: `writer` if given (the reference
    `sqlalchemy` writes to any dialect; the others only to their own), else the dialect's default."""
    name = writer or DEFAULT.get(dialect, "sqlalchemy")
    if name not in WRITERS:
        raise StateStoreError(f"unknown state writer {name!r}: one of {', '.join(WRITERS)}")
    if name == "sqlalchemy":
        return BatchWriter
    if name != dialect:
        raise StateStoreError(f"the {name} writer cannot write to a {dialect} state store")
    if name == "postgresql":
        return PostgresWriters()
    return SqliteWriters()

"""The bookkeeping tables on a real SQLite file: names per namespace, creation, migrations."""

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.dialects import sqlite

from ecst.consumer.schema import FLOOR, Bookkeeping, dialect_insert
from ecst.consumer.store import StateStore
from tests.unit.consumer.envelopes import TOPIC, event, row


def test_a_namespace_prefixes_every_bookkeeping_table_but_the_shared_generation():
    live, shadow = Bookkeeping(""), Bookkeeping("ecst_shadow__")
    names = [t.name for t in (live.offsets, live.deleted, live.snapshots, live.columns, live.rebuilds)]
    assert names == ["ecst_offsets", "ecst_deleted", "ecst_snapshots", "ecst_columns", "ecst_rebuild"]
    assert shadow.offsets.name == "ecst_shadow__ecst_offsets"
    assert shadow.meta_table.name == live.meta_table.name == "ecst_meta"


def test_create_makes_the_tables_once_and_the_generation_starts_at_zero(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    book = Bookkeeping("")
    with engine.begin() as conn:
        book.create(conn)
        book.create(conn)  # a second process opening the same state
        assert {"ecst_offsets", "ecst_meta", "ecst_rebuild"} <= set(inspect(conn).get_table_names())
        assert FLOOR in {c["name"] for c in inspect(conn).get_columns("ecst_offsets")}
        assert book.generation(conn) == 0
        assert isinstance(dialect_insert(conn, book.offsets), sqlite.Insert)
    engine.dispose()


def test_offsets_of_an_older_state_get_the_floor_column(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # the offsets table as ecst 0.1.0 created it
        conn.exec_driver_sql("CREATE TABLE ecst_offsets (topic VARCHAR(255) NOT NULL, partition INTEGER "
                             "NOT NULL, next_offset BIGINT NOT NULL, updated_at DATETIME NOT NULL, "
                             "PRIMARY KEY (topic, partition))")
        conn.exec_driver_sql(f"INSERT INTO ecst_offsets VALUES ('{TOPIC}', 0, 7, '2026-01-01')")
    engine.dispose()
    store = StateStore(url)
    assert store.stored_offsets() == {(TOPIC, 0): 7}
    store.apply([event("r", 1, 100, 7, after=row(1), snapshot="true")], {(TOPIC, 0): 8})
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT position_floor FROM ecst_offsets")).scalar() == 100
    store.close()

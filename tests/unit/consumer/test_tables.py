"""State tables on a real SQLite file: created from the events' schemas, read back typed."""

import pytest
from sqlalchemy import create_engine, text

from ecst.consumer.plan import plan_batch
from ecst.consumer.schema import POSITION, Bookkeeping
from ecst.consumer.tables import StateTables
from ecst.exceptions import StateStoreError
from tests.unit.consumer.envelopes import event, row


def changes(*events):
    (step,) = plan_batch(list(events))
    return step.tables["users"]


@pytest.fixture
def conn(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.begin() as c:
        yield c
    engine.dispose()


def tables_in(conn, namespace=""):
    book = Bookkeeping(namespace)
    book.create(conn)
    return StateTables(namespace, book.columns)


def test_a_table_is_created_in_its_namespace_and_read_back_with_its_recorded_types(conn):
    tables = tables_in(conn, "ecst_shadow__")
    made = tables.for_changes(conn, changes(event("r", 1, 100, after=row(1))))
    assert made.name == "ecst_shadow__users" and tables.names(conn) == ["users"]
    assert tables.recorded_fields(conn, "users")["balance"].logical == "org.apache.kafka.connect.data.Decimal"
    loaded = tables_in(conn, "ecst_shadow__").load(conn, "users")  # another process
    assert [c.name for c in loaded.primary_key.columns] == ["id"] and POSITION in loaded.c
    assert {c.name: type(c.type) for c in loaded.columns} == {c.name: type(c.type) for c in made.columns}


def test_a_table_never_created_does_not_exist_and_a_forgotten_one_is_loaded_again(conn):
    tables = tables_in(conn)
    assert tables.existing(conn, "users") is None
    made = tables.for_changes(conn, changes(event("r", 1, 100, after=row(1))))
    assert tables.existing(conn, "users") is made  # cached
    tables.forget()
    assert tables.existing(conn, "users").name == "users"


def test_a_table_made_outside_ecst_without_the_key_column_is_refused(conn):
    tables = tables_in(conn)
    conn.execute(text("CREATE TABLE users (email TEXT)"))
    with pytest.raises(StateStoreError, match=r"exists without key column\(s\) \['id'\]"):
        tables.for_changes(conn, changes(event("r", 1, 100, after=row(1))))

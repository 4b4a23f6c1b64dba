"""Which key each captured table's change events carry, decided as Debezium decides it."""

import pytest

from ecst.connectors.keys import (
    TableInfo,
    UniqueIndex,
    parse_key_columns,
    resolve_key,
    select_tables,
    split_list,
)
from ecst.exceptions import DefinitionError

TABLES = [("public", "users"), ("public", "users_old"), ("audit", "log"), ("pg_catalog", "pg_class"),
          ("information_schema", "tables"), ("public", "Orders")]


def test_lists_split_on_commas_but_not_escaped_ones():
    assert split_list(r" public\.a , public\.b{1\,3},, ") == [r"public\.a", "public\\.b{1,3}"]
    assert split_list(None) == [] and split_list("") == []


@pytest.mark.parametrize("config, expected", [
    ({"table.include.list": "public.users"}, [("public", "users")]),  # a whole-name match, not a prefix
    ({"table.include.list": r"public\.users.*"}, [("public", "users"), ("public", "users_old")]),
    ({"table.include.list": "PUBLIC.orders"}, [("public", "Orders")]),  # case-insensitive, as Debezium
    ({"table.include.list": "public.users,audit.log"}, [("audit", "log"), ("public", "users")]),
    ({"schema.include.list": "audit"}, [("audit", "log")]),
    ({"schema.exclude.list": "public"}, [("audit", "log")]),
    ({"table.exclude.list": r"public\.users.*"}, [("audit", "log"), ("public", "Orders")]),
    ({}, [("audit", "log"), ("public", "Orders"), ("public", "users"), ("public", "users_old")]),
])
def test_captured_tables_follow_debeziums_filters_and_never_system_schemas(config, expected):
    assert select_tables(TABLES, config) == expected


def test_an_invalid_regular_expression_names_the_file_and_key():
    with pytest.raises(DefinitionError, match=r"^c.yaml: config.table.include.list: invalid regular"):
        select_tables(TABLES, {"table.include.list": "public.(users"}, "c.yaml: ")


def test_message_key_columns_entries():
    assert parse_key_columns("public.h:stream,seq; audit\\.log:id;") == [
        ("public.h", ("stream", "seq")), ("audit\\.log", ("id",))]
    assert parse_key_columns(None) == [] and parse_key_columns(" ") == []
    for bad in ("public.h", "public.h:a:b", "public.h: a"):
        with pytest.raises(DefinitionError, match=r"^h.yaml: config.message.key.columns: entry .* is not "
                                                  r"<schema>.<table>:<column>\[,<column>\]"):
            parse_key_columns(bad, "h.yaml: ")


HISTORY = TableInfo("public", "history", ("stream", "seq", "note"), not_null=frozenset({"stream", "seq"}))


def key(info, key_columns=None):
    return resolve_key(info, parse_key_columns(key_columns))


def test_a_table_without_primary_key_unique_index_or_key_columns_has_no_key():
    k = key(HISTORY)
    assert not k.ok and k.columns == () and k.note == ""


def test_message_key_columns_give_a_key_in_table_order_and_override_the_primary_key():
    k = key(HISTORY, r"public\.hist.*:seq,stream")
    assert k.ok and k.columns == ("stream", "seq") and k.describe() == "message.key.columns (stream, seq)"
    keyed = TableInfo("public", "history", HISTORY.columns, primary_key=("seq",))
    assert key(keyed, "public.history:note").columns == ("note",)
    assert key(keyed, "public.other:note").describe() == "primary key (seq)"  # entry for another table


def test_message_key_columns_naming_a_missing_column_are_reported():
    k = key(HISTORY, "public.history:stream,sequence")
    assert not k.ok and k.missing == ("sequence",) and k.columns == ("stream",)


def test_the_first_unique_index_keys_a_table_without_primary_key_if_it_can():
    first = UniqueIndex("a_idx", ("stream", "seq"))
    assert key(TableInfo("public", "h", HISTORY.columns, HISTORY.not_null, unique_indexes=(
        first, UniqueIndex("b_idx", ("note",))))).describe() == "unique index a_idx (stream, seq)"
    for index, flaw in [(UniqueIndex("n_idx", ("note",)), "allows NULLs in note"),
                        (UniqueIndex("p_idx", ("seq",), partial=True), "is partial"),
                        (UniqueIndex("e_idx", (), expressions=True), "has expressions")]:
        k = key(TableInfo("public", "h", HISTORY.columns, HISTORY.not_null, unique_indexes=(index, first)))
        assert not k.ok and k.note == f"its unique index {index.name} {flaw}, so it cannot be the key"


def test_replica_identity_columns():
    full = TableInfo("public", "h", ("a", "b"), replica_identity="f")
    assert full.identity_columns == ("a", "b")
    assert TableInfo("public", "h", ("a", "b"), primary_key=("a",)).identity_columns == ("a",)
    assert TableInfo("public", "h", ("a", "b")).identity_columns == ()  # DEFAULT without a primary key
    by_index = TableInfo("public", "h", ("a", "b"), replica_identity="i", identity_index=("b",))
    assert by_index.identity_columns == ("b",)

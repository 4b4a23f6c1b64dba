"""Which key the change events of each captured table carry, decided from the producer's catalog the
way Debezium's Postgres connector decides it: the columns `message.key.columns` names, else the
primary key, else the table's first unique index.

A table with none of them gets change events with a null key: a compacted topic rejects them (the
task fails, and its replication slot goes on retaining WAL), and ecst cannot apply them either.
`ecst connectors apply|plan` refuse such a config (`require_keys`); `ecst connectors doctor`
reports it (`table_keys`). The filters and lists are read as Debezium reads them: comma-separated
regular expressions (`\\,` is a literal comma), matched case-insensitively against the whole
`schema.table` (and `schema.table.column`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from ecst.connectors.definition import ConnectorDefinition
from ecst.exceptions import DefinitionError, ProducerError

# Never captured: Postgres' own schemas.
_SYSTEM_SCHEMA = re.compile(r"pg_catalog|information_schema|pg_toast|pg_temp_\d+|pg_toast_temp_\d+")
_KEY_ENTRY = re.compile(r"\s*([^\s:]+):([^:\s]+)\s*")
KEY_COLUMNS = "message.key.columns"


def split_list(value: str | None) -> list[str]:
    """A Debezium list of regular expressions: split on commas, except escaped ones (`\\,`)."""
    parts, current, chars = [], [], iter(value or "")
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            current.append("," if nxt == "," else c + nxt)
        elif c == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _patterns(config: dict[str, str], key: str, where: str) -> list[re.Pattern[str]] | None:
    if not config.get(key):
        return None
    try:
        return [re.compile(p, re.IGNORECASE) for p in split_list(config[key])]
    except re.error as exc:
        raise DefinitionError(f"{where}config.{key}: invalid regular expression: {exc}") from exc


def select_tables(tables: Iterable[tuple[str, str]], config: dict[str, str],
                  where: str = "") -> list[tuple[str, str]]:
    """The (schema, table) pairs among `tables` that a connector with `config` captures:
    schema.include.list / schema.exclude.list, then table.include.list / table.exclude.list."""
    schema_in = _patterns(config, "schema.include.list", where)
    schema_out = _patterns(config, "schema.exclude.list", where)
    table_in = _patterns(config, "table.include.list", where)
    table_out = _patterns(config, "table.exclude.list", where)

    def hit(patterns: list[re.Pattern[str]], text: str) -> bool:
        return any(p.fullmatch(text) for p in patterns)

    out = []
    for schema, table in tables:
        name = f"{schema}.{table}"
        if _SYSTEM_SCHEMA.fullmatch(schema):
            continue
        if (schema_in is not None and not hit(schema_in, schema)) or \
                (schema_out is not None and hit(schema_out, schema)):
            continue
        if (table_in is not None and not hit(table_in, name)) or \
                (table_out is not None and hit(table_out, name)):
            continue
        out.append((schema, table))
    return sorted(out)


def parse_key_columns(value: str | None, where: str = "") -> list[tuple[str, tuple[str, ...]]]:
    """`message.key.columns`: `<schema>.<table>:<column>[,<column>]` entries separated by `;`
    (the table part is a regular expression), as (table pattern, column patterns) pairs."""
    entries = []
    for entry in (value or "").split(";"):
        if not entry.strip():
            continue
        m = _KEY_ENTRY.fullmatch(entry)
        if not m:
            raise DefinitionError(f"{where}config.{KEY_COLUMNS}: entry {entry.strip()!r} is not "
                                  "<schema>.<table>:<column>[,<column>] (entries are separated by ';')")
        columns = tuple(c for c in m.group(2).split(",") if c)
        for pattern in (m.group(1), *columns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise DefinitionError(f"{where}config.{KEY_COLUMNS}: invalid regular expression "
                                      f"{pattern!r}: {exc}") from exc
        entries.append((m.group(1), columns))
    return entries


@dataclass(frozen=True)
class UniqueIndex:
    """A unique index of a table, as far as it matters for a message key."""

    name: str
    columns: tuple[str, ...]  # its plain columns, in index order
    partial: bool = False
    expressions: bool = False


@dataclass(frozen=True)
class TableInfo:
    """What the catalog says about one captured table."""

    schema: str
    name: str
    columns: tuple[str, ...]  # in table order
    not_null: frozenset[str] = frozenset()
    primary_key: tuple[str, ...] = ()
    unique_indexes: tuple[UniqueIndex, ...] = ()  # ordered by name, as Debezium reads them
    replica_identity: str = "d"  # pg_class.relreplident: d(efault), n(othing), f(ull), i(ndex)
    identity_index: tuple[str, ...] = ()  # the columns of REPLICA IDENTITY USING INDEX

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def identity_columns(self) -> tuple[str, ...]:
        """The columns whose old values UPDATE and DELETE records carry (Postgres' replica identity)."""
        return {"d": self.primary_key, "f": self.columns, "i": self.identity_index}.get(
            self.replica_identity, ())


@dataclass(frozen=True)
class TableKey:
    """The key a captured table's change events will carry, and where it comes from."""

    table: TableInfo
    columns: tuple[str, ...] = ()  # empty: no key
    source: str = ""  # "message.key.columns", "primary key" or "unique index <name>"
    missing: tuple[str, ...] = ()  # message.key.columns names that match no column of the table
    note: str = ""  # why a unique index could not serve as the key

    @property
    def ok(self) -> bool:
        return bool(self.columns) and not self.missing

    def describe(self) -> str:
        return f"{self.source} ({', '.join(self.columns)})"


def resolve_key(info: TableInfo, entries: list[tuple[str, tuple[str, ...]]]) -> TableKey:
    """The key Debezium gives `info`'s events, from parsed `message.key.columns` entries."""
    named, missing = [], []
    for table_pattern, column_patterns in entries:
        if not re.fullmatch(table_pattern, info.qualified, re.IGNORECASE):
            continue
        for column_pattern in column_patterns:
            full = re.compile(f"{table_pattern}.{column_pattern}", re.IGNORECASE)
            hits = [c for c in info.columns if full.fullmatch(f"{info.qualified}.{c}")]
            named += hits
            if not hits:
                missing.append(column_pattern)
    if named or missing:  # Debezium keeps the table's column order
        return TableKey(info, tuple(c for c in info.columns if c in named), KEY_COLUMNS, tuple(missing))
    if info.primary_key:
        return TableKey(info, info.primary_key, "primary key")
    if info.unique_indexes:
        index = info.unique_indexes[0]  # the one Debezium takes
        nullable = [c for c in index.columns if c not in info.not_null]
        flaw = ("is partial" if index.partial else "has expressions" if index.expressions
                else f"allows NULLs in {', '.join(nullable)}" if nullable else "")
        if not flaw:
            return TableKey(info, index.columns, f"unique index {index.name}")
        return TableKey(info, note=f"its unique index {index.name} {flaw}, so it cannot be the key")
    return TableKey(info)


def captured_tables(conn: psycopg.Connection, config: dict[str, str],
                    where: str = "") -> list[tuple[str, str]]:
    """(schema, table) pairs of the producer database that the connector captures."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p')").fetchall()
    return select_tables(rows, config, where)


def read_table(conn: psycopg.Connection, schema: str, table: str) -> TableInfo:
    """The catalog facts of one table that decide its key."""
    row = conn.execute(
        "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s", (schema, table)).fetchone()
    if row is None:
        raise ProducerError(f"table {schema}.{table} is not in the producer database (dropped while "
                            "its catalog was read?)")
    oid, replident = row
    columns = conn.execute(
        "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (oid,)).fetchall()
    indexes = conn.execute(
        """SELECT i.relname, x.indisprimary, x.indisreplident, x.indpred IS NOT NULL,
                  x.indexprs IS NOT NULL,
                  ARRAY(SELECT a.attname FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                        ORDER BY k.n)
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
           WHERE x.indrelid = %s AND x.indisunique AND x.indisvalid ORDER BY i.relname""",
        (oid,)).fetchall()
    primary = next((tuple(cols) for _, pk, _, _, _, cols in indexes if pk), ())
    return TableInfo(
        schema=schema, name=table, columns=tuple(c for c, _ in columns),
        not_null=frozenset(c for c, nn in columns if nn), primary_key=primary,
        unique_indexes=tuple(UniqueIndex(name, tuple(cols), partial, exprs)
                             for name, pk, _, partial, exprs, cols in indexes if not pk),
        replica_identity=replident,
        identity_index=next((tuple(cols) for _, _, ri, _, _, cols in indexes if ri), ()),
    )


def table_keys(conn: psycopg.Connection, config: dict[str, str], where: str = "") -> list[TableKey]:
    """The key of every table the connector captures (read-only)."""
    entries = parse_key_columns(config.get(KEY_COLUMNS), where)
    return [resolve_key(read_table(conn, s, t), entries) for s, t in captured_tables(conn, config, where)]


def keyless_fix(table: str) -> str:
    """What to do about a captured table without a key, for error messages and the doctor."""
    return (f"add a primary key, or set message.key.columns: {table}:<column>[,<column>] to columns "
            "that identify a row; UPDATE and DELETE on a table without primary key also need "
            f"ALTER TABLE {table} REPLICA IDENTITY FULL on the producer (or USING INDEX <a unique index "
            "on NOT NULL columns holding the key columns>): Postgres refuses them otherwise while the "
            "publication publishes them")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def require_keys(conn: psycopg.Connection, definition: ConnectorDefinition) -> list[TableKey]:
    """The keys of the tables `definition` captures; ProducerError, naming the connector's file and
    each table, when a table would get change events without a key."""
    where = f"{definition.source}: " if definition.source else ""
    keys = table_keys(conn, definition.config, where)
    head = f"connector {definition.name}" + (f" ({definition.source})" if definition.source else "")
    for k in keys:
        if k.missing:
            raise ProducerError(
                f"{head}: {KEY_COLUMNS} names {', '.join(k.missing)} for {k.table.qualified}, which has no "
                f"such column (columns: {', '.join(k.table.columns)}); nothing was changed")
    keyless = [k for k in keys if not k.ok]
    if keyless:
        names = ", ".join(k.table.qualified for k in keyless)
        notes = "; ".join(k.note for k in keyless if k.note)
        raise ProducerError(
            f"{head} captures {names}, which {'has' if len(keyless) == 1 else 'have'} no primary key"
            f"{f' ({notes})' if notes else ''}: its change events would have no key (a compacted topic "
            "rejects them, the task fails and its slot retains WAL); nothing was changed. "
            + _sentence(keyless_fix(keyless[0].table.qualified)))
    return keys

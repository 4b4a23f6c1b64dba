"""Comparison of the producer's table with the private state: row by row (every column), and
`verify_table` for operators: counts, a checksum per key range, then the keys that differ."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ecst.consumer.types import canonical


@dataclass
class Comparison:
    """The outcome of comparing two sets of rows by primary key."""

    source_rows: int
    state_rows: int
    missing: list[tuple] = field(default_factory=list)  # keys in the source, not in the state
    extra: list[tuple] = field(default_factory=list)  # keys in the state, not in the source
    differing: list[tuple[tuple, str, Any, Any]] = field(default_factory=list)  # key, col, src, state

    @property
    def matches(self) -> bool:
        return not (self.missing or self.extra or self.differing)

    def summary(self, limit: int = 5) -> str:
        if self.matches:
            return f"private state matches producer: {self.source_rows} rows"
        parts = [f"private state DIFFERS from producer ({self.source_rows} source rows, "
                 f"{self.state_rows} state rows)"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing, e.g. {self.missing[:limit]}")
        if self.extra:
            parts.append(f"{len(self.extra)} extra, e.g. {self.extra[:limit]}")
        if self.differing:
            parts.append(f"{len(self.differing)} differing values, e.g. {self.differing[:limit]}")
        return "; ".join(parts)


def compare_rows(source: Iterable[dict[str, Any]], state: Iterable[dict[str, Any]],
                 key: list[str]) -> Comparison:
    """Compare every source column of every row; the state may have extra columns."""
    src = {tuple(canonical(r[k]) for k in key): r for r in source}
    dst = {tuple(canonical(r[k]) for k in key): r for r in state}
    result = Comparison(source_rows=len(src), state_rows=len(dst))
    result.missing = sorted(k for k in src if k not in dst)
    result.extra = sorted(k for k in dst if k not in src)
    for k in sorted(src.keys() & dst.keys()):
        s, d = src[k], dst[k]
        for col, value in s.items():
            if col not in d:
                result.differing.append((k, col, value, "<no column>"))
            elif canonical(value) != canonical(d[col]):
                result.differing.append((k, col, value, d[col]))
    return result


def primary_key(conn: psycopg.Connection, table: str, schema: str = "public") -> list[str]:
    rows = conn.execute(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass
             AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)""",
        (schema, table),
    ).fetchall()
    return [r[0] for r in rows]


def source_rows(conn: psycopg.Connection, table: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        return cur.fetchall()


def estimate_rows(conn: psycopg.Connection, table: str, condition: str | None = None) -> int:
    """The planner's row estimate for `table` (`schema.table` or `table`), optionally filtered by
    an SQL condition: cheap (EXPLAIN, nothing is read) and read-only. For progress bars."""
    schema, _, name = table.rpartition(".")
    ident = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}").format(ident)
    if condition:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(condition))  # type: ignore[arg-type]
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        plan = conn.execute(query).fetchone()[0]
    return int(plan[0]["Plan"]["Plan Rows"])


@dataclass
class Drift:
    """What `verify_table` found: per key range checksums, then the keys that differ."""

    source_table: str
    state_table: str
    ranges: int
    differing_ranges: int
    comparison: Comparison

    @property
    def drifted(self) -> bool:
        return self.differing_ranges > 0

    def summary(self) -> str:
        c = self.comparison
        head = (f"{self.state_table}: {c.source_rows:,} source rows ({self.source_table}), {c.state_rows:,} "
                f"state rows, {self.ranges} key ranges, {self.differing_ranges} differ")
        if not self.drifted:
            return head + ": no drift"
        return head + f": DRIFT, {len(c.missing)} missing, {len(c.extra)} extra, " \
            f"{len(c.differing)} differing values; e.g. missing {c.missing[:5]}, extra {c.extra[:5]}, " \
            f"differing {[(k, col) for k, col, _, _ in c.differing[:5]]}"


def _checksum(rows: list[tuple]) -> str:
    h = hashlib.sha256()
    for r in sorted(rows, key=repr):
        h.update(repr(r).encode())
    return h.hexdigest()


def verify_table(conn: psycopg.Connection, source_table: str, state_rows: list[dict[str, Any]],
                 state_table: str, columns: dict[str, str] | None = None,
                 key: list[str] | None = None, range_size: int = 1000) -> Drift:
    """Compare a producer table (read in a read-only transaction) with state rows: the same
    columns (`columns` maps source to state names; None: every source column) by key."""
    schema, _, table = source_table.rpartition(".")
    schema = schema or "public"
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        src_key = key or primary_key(conn, table, schema)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            source = cur.fetchall()
    mapping = columns or {c: c for c in (source[0] if source else {})}
    projected = [{mapping[c]: v for c, v in r.items() if c in mapping} for r in source]
    state_key = [mapping.get(k, k) for k in src_key]
    names = sorted({mapping[c] for c in mapping})

    def k(r: dict[str, Any]) -> tuple:
        return tuple(canonical(r[c]) for c in state_key)

    def values(r: dict[str, Any]) -> tuple:
        return tuple(canonical(r.get(c)) for c in names)

    keys = sorted(k(r) for r in projected)
    bounds = keys[::range_size] or [()]

    def bucket(key_: tuple) -> int:
        return max(0, bisect.bisect_right(bounds, key_) - 1)

    src_ranges: dict[int, list] = {}
    dst_ranges: dict[int, list] = {}
    for r in projected:
        src_ranges.setdefault(bucket(k(r)), []).append(r)
    for r in state_rows:
        dst_ranges.setdefault(bucket(k(r)), []).append(r)
    differing = [i for i in sorted(src_ranges.keys() | dst_ranges.keys())
                 if _checksum([values(r) for r in src_ranges.get(i, [])])
                 != _checksum([values(r) for r in dst_ranges.get(i, [])])]
    comparison = compare_rows([r for i in differing for r in src_ranges.get(i, [])],
                              [r for i in differing for r in dst_ranges.get(i, [])], state_key)
    comparison.source_rows, comparison.state_rows = len(projected), len(state_rows)
    return Drift(source_table, state_table, len(bounds), len(differing), comparison)

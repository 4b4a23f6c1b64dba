"""Row-by-row comparison of the producer's table with the private state (every column)."""

from __future__ import annotations

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

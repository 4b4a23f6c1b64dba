"""The producer database from ecst's side: where it is, and the read-only helpers ecst runs on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Params

from ecst.exceptions import ProducerError
from ecst.settings import Settings

Target = tuple[str, str | None]  # (conninfo, password: None when the conninfo or libpq has it)


def producer_target(settings: Settings, url: str | None = None,
                    fallback: Callable[[Settings], Target | None] | None = None) -> Target | None:
    """(conninfo, password) of the producer database: `url`, else ECST_PRODUCER_URL, else what
    `fallback` finds (the command line passes the local stack's, when this home has one); None
    when none is known."""
    if url:
        return url, None
    if settings.producer_url is not None:
        return settings.producer_url.reveal(), None
    return fallback(settings) if fallback is not None else None


def scalar(conn: psycopg.Connection[Any], query: str | sql.SQL | sql.Composed,
           params: Params | None = None) -> Any:
    """The first value of the first row of a query that always returns a row (SHOW, count(*), a
    SELECT without FROM, INSERT ... RETURNING); ProducerError, naming the query, if it returned none."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise ProducerError(f"the producer database returned no row for {query!r}")
    return row[0]


def estimate_rows(conn: psycopg.Connection, table: str) -> int:
    """The planner's row estimate for `table` (`schema.table` or `table`): cheap (EXPLAIN, nothing
    is read) and read-only. For progress bars. There is deliberately no filter: a user's
    condition never becomes SQL that ecst runs (`ecst.connectors.conditions`)."""
    schema, _, name = table.rpartition(".")
    ident = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}").format(ident)
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        plan = scalar(conn, query)
    return int(plan[0]["Plan"]["Plan Rows"])

"""The producer database from ecst's side: where it is, connections whose errors name it (never
its password) and say what to do, and the read-only helpers ecst runs on it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.conninfo import conninfo_to_dict

from ecst.exceptions import ProducerError
from ecst.settings import MASK, Settings, mask_url

URL_FIX = "use postgresql://USER@HOST:PORT/DATABASE in --producer-url (or ECST_PRODUCER_URL)"
FIX = "check that it is running and reachable from here, or fix --producer-url (or ECST_PRODUCER_URL)"
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def describe(conninfo: str) -> str:
    """The database `conninfo` (a URL or `key=value` pairs) points at, for a message: as
    postgresql://USER@HOST:PORT/DATABASE, without its password."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.Error:  # not parseable: shown as given, any password masked
        return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", mask_url(conninfo))
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "")
    port = f":{parts['port']}" if parts.get("port") else ""
    dbname = parts.get("dbname") or ""
    if host.startswith("/"):  # a Unix socket folder
        return f"postgresql://{user}{port}/{dbname}?host={host}"
    return f"postgresql://{user}{host}{port}/{dbname}"


def first_line(exc: BaseException) -> str:
    """The first line of the driver's message (its others are hints ecst gives in its own words)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def connect(conninfo: str, password: str | None = None, *, purpose: str = "", fix: str = FIX,
            **kwargs: Any) -> psycopg.Connection:
    """A connection to the producer database (`connect_timeout` 5 s unless given). One it cannot
    open is a ProducerError naming the database and `purpose` (e.g. " to check …"), then `fix` when
    it cannot be reached, or how to write its URL when that is malformed."""
    kwargs.setdefault("connect_timeout", 5)
    try:
        return psycopg.connect(conninfo, password=password, **kwargs)
    except psycopg.OperationalError as exc:
        raise ProducerError(f"cannot reach the producer database {describe(conninfo)}{purpose} "
                            f"({first_line(exc)}): {fix}") from exc
    except psycopg.Error as exc:  # a malformed URL or option (ProgrammingError)
        raise ProducerError(f"cannot use the producer database {describe(conninfo)}{purpose}: "
                            f"{first_line(exc)}: {URL_FIX}") from exc


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

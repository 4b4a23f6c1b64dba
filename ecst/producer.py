"""Connections to the producer database whose errors name it (never its password) and say what to do."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ecst.exceptions import ProducerError
from ecst.settings import MASK, mask_url

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

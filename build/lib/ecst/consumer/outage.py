"""State store outages: which database errors mean "unavailable right now", and how the consumer
waits one out (capped backoff, reported on /readyz and /metrics) instead of giving up.

A transaction that fails advances nothing (the offsets are written with the rows), so waiting is
always safe: when the store answers again, the consumer seeks to the offsets it holds and goes on.
An error that waiting cannot fix is not an outage: one that concerns the database as a whole (a
wrong password, a database that does not exist, a corrupted file) becomes a StateStoreError, and
an error in a statement is raised as it is (a batch or a record is to blame).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from ecst.consumer.metrics import Metrics
from ecst.exceptions import StateStoreError, StateStoreUnavailableError

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0  # the cap: the store is noticed back at most this long after it returns
REMIND_EVERY_S = 60.0  # a log line while an outage lasts

# Postgres SQLSTATE classes of errors that pass: connection exceptions, transaction rollbacks
# (serialization failure, deadlock), insufficient resources (too many connections, disk full),
# object not in prerequisite state (database not accepting connections), operator intervention
# (terminated, shutting down, starting up) and system errors (I/O).
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "55", "57", "58")
_PG_TRANSIENT_STATES = ("25006",)  # read-only transaction: connected to a standby during a failover
# A connection refused by the server for a reason that waiting does not fix (no SQLSTATE then).
_PG_PERMANENT = ("authentication failed", "does not exist", "no pg_hba.conf entry", "permission denied",
                 "invalid connection option", "sslmode")
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "disk is full")
_SQLITE_BROKEN = ("malformed", "not a database", "readonly")
_PG_BROKEN_CLASSES = ("28", "3D")  # invalid authorization, invalid catalog (database) name
_PG_BROKEN_STATES = ("42501",)  # insufficient privilege: the role lost its rights on the state

T = TypeVar("T")


def transient(exc: BaseException) -> bool:
    """True when `exc` (from SQLAlchemy) says the state database is unavailable for now: a lost
    or refused connection, a database not accepting connections, a locked SQLite file. False for
    an error in the statement or in the settings, which no retry can fix."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    text = str(orig).lower()
    if "sqlite" in type(orig).__module__:
        return any(word in text for word in _SQLITE_TRANSIENT)
    state = getattr(orig, "sqlstate", None)
    if state:
        return state[:2] in _PG_TRANSIENT_CLASSES or state in _PG_TRANSIENT_STATES
    return not any(word in text for word in _PG_PERMANENT)


def broken(exc: BaseException) -> bool:
    """True when `exc` says the state database cannot be used at all, for a reason waiting does not
    fix (refused credentials, a database that does not exist, a corrupted SQLite file): not the
    fault of a statement, so no record is to blame (nothing is dead-lettered for it)."""
    if not isinstance(exc, DBAPIError) or transient(exc):
        return False
    orig = exc.orig
    if "sqlite" in type(orig).__module__:
        return any(word in str(orig).lower() for word in _SQLITE_BROKEN)
    state = getattr(orig, "sqlstate", None)
    if state:
        return state[:2] in _PG_BROKEN_CLASSES or state in _PG_BROKEN_STATES
    return isinstance(exc, OperationalError)  # no SQLSTATE: the connection itself failed


def reason(exc: BaseException) -> str:
    """The database's own words for `exc`, on one line."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())


def unavailable(exc: SQLAlchemyError, safe_url: str) -> StateStoreUnavailableError:
    """The error to raise for a transient database error."""
    return StateStoreUnavailableError(f"state store unavailable: {reason(exc)} ({safe_url})")


def store_error(exc: SQLAlchemyError, safe_url: str) -> StateStoreError | None:
    """The state store's own error for a database error: unavailable (an outage, waited out),
    unusable (refused credentials, no such database, a corrupted file), or None for an error in
    a statement, which stays as it is."""
    if transient(exc):
        return unavailable(exc, safe_url)
    if broken(exc):
        return unusable(exc, safe_url)
    return None


def unusable(exc: SQLAlchemyError, safe_url: str) -> StateStoreError:
    """The error to raise for a database error that `broken` recognises."""
    return StateStoreError(f"state store {safe_url} cannot be used: {reason(exc)} (docs/runbook.md: "
                           "\"State store corrupted or lost\")")


class Backoff:
    """Delays that double from FIRST_DELAY_S up to MAX_DELAY_S."""

    def __init__(self, first: float = FIRST_DELAY_S, cap: float = MAX_DELAY_S) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def next(self) -> float:
        """The delay to wait now; the following one is twice as long, up to the cap."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay


class StoreHealth:
    """Whether the state store answers, as /readyz, /metrics (`ecst_state_store_up`,
    `ecst_state_store_retries_total`) and the log tell it."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.down_since: float | None = None
        self.attempts = 0
        self.error = ""
        self._reminded = 0.0
        metrics.set("ecst_state_store_up", 1.0)
        metrics.inc("ecst_state_store_retries_total", 0)

    @property
    def up(self) -> bool:
        return self.down_since is None

    def lost(self, exc: BaseException) -> None:
        """The store stopped answering (or did not answer at start)."""
        self.error = str(exc)
        if self.down_since is not None:
            return
        self.down_since = self._reminded = time.monotonic()
        self.attempts = 0
        self.metrics.set("ecst_state_store_up", 0.0)
        log.warning("%s: waiting for it, retrying every %.0f s at most; /readyz answers 503 and no offset "
                    "moves until it is back", exc, MAX_DELAY_S)

    def failed(self, exc: BaseException) -> None:
        """One more attempt to reach it failed."""
        self.error = str(exc)
        self.attempts += 1
        self.metrics.inc("ecst_state_store_retries_total")
        if time.monotonic() - self._reminded >= REMIND_EVERY_S:
            self._reminded = time.monotonic()
            log.warning("%s: still waiting after %.0f s (%d attempts)", exc,
                        time.monotonic() - (self.down_since or time.monotonic()), self.attempts)

    def back(self) -> None:
        """It answers again."""
        if self.down_since is None:
            return
        log.warning("state store back after %.1f s (%d attempts): resuming at the offsets it holds",
                    time.monotonic() - self.down_since, self.attempts + 1)
        self.down_since = None
        self.metrics.set("ecst_state_store_up", 1.0)


def wait_for_store(probe: Callable[[], T], health: StoreHealth, stop: threading.Event,
                   idle: Callable[[float], None] | None = None) -> T | None:
    """Call `probe` until it stops raising StateStoreUnavailableError, with capped backoff;
    `idle(seconds)` spends each delay (default: sleeping). Returns what `probe` returned, or None
    once `stop` is set. Any other error is raised."""
    pause: Callable[[float], object] = idle or stop.wait
    backoff = Backoff()
    while not stop.is_set():
        try:
            result = probe()
        except StateStoreUnavailableError as exc:
            if health.up:
                health.lost(exc)
            else:
                health.failed(exc)
            pause(backoff.next())
            continue
        health.back()
        return result
    return None

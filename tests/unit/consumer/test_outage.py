"""Telling a state store outage from a mistake, and waiting one out."""

import sqlite3
import threading

import psycopg
import psycopg.errors
import pytest
from sqlalchemy.exc import DatabaseError, InterfaceError, OperationalError, ProgrammingError

from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import MAX_DELAY_S, Backoff, StoreHealth, broken, transient, wait_for_store
from ecst.exceptions import StateStoreError, StateStoreUnavailableError


def wrapped(orig, kind=OperationalError):
    return kind("SELECT ...", {}, orig)


@pytest.mark.parametrize("message, expected", [
    ("database is locked", True),
    ("unable to open database file", True),
    ("database or disk is full", True),
    ('near ")": syntax error', False),       # a bad statement: retrying cannot help
    ("no such column: nope", False),
])
def test_only_a_locked_or_unreachable_sqlite_database_is_an_outage(message, expected):
    assert transient(wrapped(sqlite3.OperationalError(message))) is expected


@pytest.mark.parametrize("orig, expected", [
    # refused connections carry no SQLSTATE: their words decide
    (psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                              "Connection refused"), True),
    (psycopg.OperationalError('connection failed: FATAL:  database "s" is not currently accepting '
                              "connections"), True),
    (psycopg.OperationalError("failed to resolve host 'db': [Errno -2] Name or service not known"), True),
    (psycopg.OperationalError('connection failed: FATAL:  password authentication failed for user "x"'),
     False),
    (psycopg.OperationalError('connection failed: FATAL:  database "nosuchdb" does not exist'), False),
    (psycopg.OperationalError("connection failed: FATAL:  no pg_hba.conf entry for host"), False),
    # errors on an open session carry one
    (psycopg.errors.lookup("57P01")("terminating connection due to administrator command"), True),
    (psycopg.errors.lookup("53300")("sorry, too many clients already"), True),
    (psycopg.errors.lookup("40P01")("deadlock detected"), True),
    (psycopg.errors.lookup("25006")("cannot execute INSERT in a read-only transaction"), True),
    (psycopg.errors.lookup("54000")("index row size exceeds maximum"), False),  # the statement's fault
])
def test_postgres_outages_are_told_from_mistakes(orig, expected):
    assert transient(wrapped(orig)) is expected


def test_a_lost_connection_is_an_outage_and_a_bad_statement_is_not():
    assert transient(wrapped(psycopg.InterfaceError("the connection is closed"), InterfaceError))
    assert not transient(wrapped(psycopg.errors.lookup("42703")("column nope"), ProgrammingError))
    assert not transient(ValueError("not a database error"))


@pytest.mark.parametrize("orig, expected", [
    (psycopg.OperationalError('connection failed: FATAL:  database "s" does not exist'), True),
    (psycopg.OperationalError('connection failed: FATAL:  password authentication failed for user "x"'),
     True),
    (psycopg.errors.lookup("28P01")('password authentication failed for user "x"'), True),
    (psycopg.errors.lookup("3D000")('database "s" does not exist'), True),
    (psycopg.errors.lookup("42501")("permission denied for table users"), True),
    (psycopg.errors.lookup("42703")('column "nope" does not exist'), False),  # the statement's fault
    (sqlite3.DatabaseError("database disk image is malformed"), True),
    (sqlite3.DatabaseError("file is not a database"), True),
    (sqlite3.OperationalError("attempt to write a readonly database"), True),
    (psycopg.errors.lookup("57P01")("terminating connection due to administrator command"), False),  # passes
    (psycopg.errors.lookup("54000")("index row size exceeds maximum"), False),  # the batch's fault
    (sqlite3.OperationalError("no such column: nope"), False),
])
def test_a_database_that_cannot_be_used_at_all_is_told_from_a_bad_statement(orig, expected):
    kind = OperationalError if isinstance(orig, (psycopg.OperationalError, sqlite3.OperationalError)) \
        else DatabaseError  # as SQLAlchemy wraps them
    assert broken(wrapped(orig, kind)) is expected


def test_backoff_doubles_up_to_its_cap():
    backoff = Backoff()
    assert [backoff.next() for _ in range(8)] == [0.5, 1, 2, 4, 8, MAX_DELAY_S, MAX_DELAY_S, MAX_DELAY_S]


class Flaky:
    """A probe that fails `failures` times, then answers."""

    def __init__(self, failures, health=None):
        self.failures = failures
        self.calls = 0
        self.health = health
        self.seen_up = []  # the gauge as each failing call left it

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise StateStoreUnavailableError(f"state store x unavailable: attempt {self.calls}")
        return {"offsets": 1}


def test_waiting_reports_the_outage_and_ends_when_the_store_answers():
    metrics = Metrics()
    health = StoreHealth(metrics)
    assert metrics.value("ecst_state_store_up") == 1
    assert "ecst_state_store_retries_total 0" in metrics.render()
    probe, waited = Flaky(failures=4), []

    def idle(seconds):
        waited.append(seconds)
        assert not health.up and metrics.value("ecst_state_store_up") == 0  # while it waits

    assert wait_for_store(probe, health, threading.Event(), idle) == {"offsets": 1}
    assert waited == [0.5, 1, 2, 4]
    assert health.up and metrics.value("ecst_state_store_up") == 1
    assert metrics.value("ecst_state_store_retries_total") == 3  # the first failure opened the outage
    assert "ecst_state_store_up 1" in metrics.render()


def test_waiting_ends_without_a_result_when_stopped():
    stop = threading.Event()
    health = StoreHealth(Metrics())
    assert wait_for_store(Flaky(failures=100), health, stop, lambda s: stop.set()) is None
    assert not health.up


def test_a_mistake_is_raised_at_once():
    def probe():
        raise StateStoreError("cannot open state store: password authentication failed")

    with pytest.raises(StateStoreError, match="password authentication failed"):
        wait_for_store(probe, StoreHealth(Metrics()), threading.Event(), lambda s: None)

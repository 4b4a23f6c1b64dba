"""Pure pieces of the consumer loop."""

import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from ecst.consumer.runner import _transient


@pytest.mark.parametrize("message, transient", [
    ("database is locked", True),
    ("unable to open database file", True),
    ('near ")": syntax error', False),       # a bad statement: retrying cannot help
    ("no such column: nope", False),
])
def test_only_a_locked_or_unreachable_sqlite_database_is_retried(message, transient):
    exc = OperationalError("INSERT ...", {}, sqlite3.OperationalError(message))
    assert _transient(exc) is transient

"""Fixtures of the consumer's unit tests: a state on a temporary SQLite file."""

import pytest

from ecst.consumer.store import StateStore


@pytest.fixture
def url(tmp_path):
    """A SQLite state URL in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def store(url):
    """A `StateStore` at `url`, closed after the test."""
    s = StateStore(url)
    yield s
    s.close()

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


@pytest.fixture(autouse=True)
def no_settle_wait(monkeypatch):
    """No wait for late snapshot records (runner.SNAPSHOT_SETTLE_S) unless a test asks for one."""
    monkeypatch.setattr("ecst.consumer.runner.SNAPSHOT_SETTLE_S", 0.0)

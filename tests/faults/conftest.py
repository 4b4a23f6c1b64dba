"""The fault suite (`make faults`): one real local stack for the session, a pipeline per
scenario, and docs/reliability.{md,json} written from the scenarios' outcomes at the end.

ECST_FAULTS_SIZE=ci (the default, what `.ci/run` runs) or full (the 10-minute soak).
A stack that cannot start makes the suite fail: it never skips.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.faults import report
from tests.faults.harness import Pipeline
from tests.integration.conftest import Capture, stack  # noqa: F401  (the session stack fixture)


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def logs():
    """Where every consumer service and CLI run of the suite writes its output (the security
    scenario reads all of it): ECST_FAULTS_LOGS, default .faults-logs/ in the checkout, emptied
    at the start of a run and kept afterwards for a look."""
    path = Path(os.environ.get("ECST_FAULTS_LOGS") or Path(__file__).resolve().parents[2] / ".faults-logs")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="session")
def outcomes():
    """Each scenario appends its Outcome; the reliability docs are written at the end."""
    done = []
    yield done
    if done:
        report.write(done)


@pytest.fixture
def pipeline(stack, logs, tmp_path):  # noqa: F811
    """Builds a Pipeline on its own table, slot, connector and topics; closes it afterwards."""
    made = []

    def make(*consumer_args, state_url=None):
        capture = Capture(stack, uuid.uuid4().hex[:10])
        p = Pipeline(capture, state_url or f"sqlite:///{tmp_path / f'state-{capture.uid}.db'}", logs,
                     *consumer_args)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
        p.capture.close()
        for cleanup in p.cleanups:
            cleanup()

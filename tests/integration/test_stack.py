"""`ecst stack` on the real local stack: status, env, idempotent up, Maven failure."""

import os
import shutil
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration import cli

ROOT = Path(__file__).resolve().parents[2]


def ecst(*args, env=None, timeout=600):
    return cli.ecst(*args, env=env, timeout=timeout)


@pytest.fixture
def local(stack):
    if not hasattr(stack, "stack"):
        pytest.fail("these tests exercise the local stack: run them with ECST_TEST_STACK=local")
    return stack


def test_status_lists_every_component_running(local):
    r = ecst("--home", str(local.settings.home), "stack", "status")
    assert r.returncode == 0, r.stdout + r.stderr
    names = [line.split()[:2] for line in r.stdout.splitlines()]
    assert names == [["postgres", "running"], ["kafka", "running"], ["connect", "running"]]


def test_env_exports_work_without_printing_a_password(local):
    r = ecst("--home", str(local.settings.home), "stack", "env")
    assert r.returncode == 0
    env = dict(line.removeprefix("export ").split("=", 1) for line in r.stdout.splitlines())
    assert set(env) >= {"ECST_PRODUCER_URL", "ECST_BOOTSTRAP_SERVERS", "ECST_CONNECT_URL", "PGPASSFILE"}
    assert local.stack.postgres.admin_password not in r.stdout
    # the URL plus PGPASSFILE is enough for libpq
    os.environ["PGPASSFILE"] = env["PGPASSFILE"]
    try:
        with psycopg.connect(env["ECST_PRODUCER_URL"]) as conn:
            assert conn.execute("SHOW wal_level").fetchone()[0] == "logical"
    finally:
        del os.environ["PGPASSFILE"]


def test_second_up_reuses_everything(local):
    before = [c.pid for c in local.stack.status()]
    started = time.monotonic()
    r = ecst("--home", str(local.settings.home), "stack", "up")
    assert r.returncode == 0, r.stderr
    assert [c.pid for c in local.stack.status()] == before
    assert "created PostgreSQL cluster" not in r.stderr
    assert time.monotonic() - started < 60


def test_failed_maven_download_is_one_line_with_advice(tmp_path, local):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "deploy", project / "deploy")
    pom = project / "deploy" / "pom.xml"
    pom.write_text(pom.read_text().replace("<kafka.version>4.3.0<", "<kafka.version>0.0.404-missing<"))
    ports = {"ECST_PG_PORT": "45432", "ECST_KAFKA_PORT": "49092", "ECST_CONTROLLER_PORT": "49093",
             "ECST_CONNECT_PORT": "48083", "ECST_PROJECT_DIR": str(project)}
    r = ecst("--home", str(tmp_path / "home"), "stack", "up", env=ports)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Maven could not resolve" in errors[0], r.stderr
    assert "check access to Maven Central" in errors[0]

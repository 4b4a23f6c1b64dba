"""`ecst stack` on the real local stack: status, env, idempotent up, Maven failure; a second
stack of its own on a `mktemp -d` home (as root: Postgres' fallback folder; owner-only data); what
the connector role's REPLICATION attribute lets it read."""

import os
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from ecst.settings import Settings
from ecst.stack.postgres import CONNECTOR_ROLE, find_bindir, paths_for
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


# -- a stack of its own on a home made by `mktemp -d` (0700) -------------------------------------
def _ports() -> dict[str, str]:
    """Four free ports, none of them a port the session's stack (or a default stack) may use."""
    taken = set()
    for s in (Settings(), Settings.from_env()):
        taken |= {s.pg_port, s.kafka_port, s.controller_port, s.connect_port}
    ports: list[int] = []
    while len(ports) < 4:
        port = cli.free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    names = ("ECST_PG_PORT", "ECST_KAFKA_PORT", "ECST_CONTROLLER_PORT", "ECST_CONNECT_PORT")
    return dict(zip(names, map(str, ports), strict=True))


@pytest.fixture(scope="module")
def mktemp_stack():
    """`ECST_HOME=$(mktemp -d) ecst stack up` on free ports: (home, env, result of up).
    Stopped with `ecst stack down`, then the home and its Postgres folder are removed."""
    home = Path(tempfile.mkdtemp(prefix="ecst-home-"))
    env = {"ECST_HOME": str(home), **_ports()}
    up = ecst("stack", "up", env=env)
    try:
        yield home, env, up
    finally:
        down = ecst("stack", "down", env=env)
        assert down.returncode == 0, f"stack on {home} not stopped: {down.stderr}"
        pg_base = paths_for(home).data.parent
        shutil.rmtree(home)
        if not pg_base.is_relative_to(home):
            shutil.rmtree(pg_base, ignore_errors=True)
            if pg_base.parent.exists() and not any(pg_base.parent.iterdir()):
                pg_base.parent.rmdir()


def test_up_works_on_a_home_made_by_mktemp(mktemp_stack):
    home, env, up = mktemp_stack
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # what mktemp -d makes
    assert up.returncode == 0, up.stderr
    status = ecst("stack", "status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    if os.geteuid() == 0:
        # the `postgres` OS user cannot enter the home: the cluster lives in the fallback folder
        data = paths_for(home).data
        assert not data.is_relative_to(home) and (data / "PG_VERSION").exists(), data


def _private(home: Path) -> list[Path]:
    """Everything the stack keeps that holds users' rows, secrets or logs."""
    pg = paths_for(home)
    return [home / "kafka", home / "connect", home / "logs", home / "run",
            home / "credentials.json", home / "pgpass", pg.data.parent]


def _exposed(paths: list[Path]) -> list[str]:
    """`mode path` of each file or folder under `paths` that group or others have any right on."""
    found = []
    for top in paths:
        entries = [top]
        for folder, dirs, files in os.walk(top):
            entries += [Path(folder, name) for name in dirs + files]
        for entry in entries:
            try:
                mode = entry.lstat().st_mode
            except FileNotFoundError:  # Kafka removes and renames files as it runs
                continue
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{stat.S_IMODE(mode):04o} {entry}")
    return found


def test_kafka_data_logs_and_secrets_are_owner_only(mktemp_stack):
    home, env, up = mktemp_stack
    assert up.returncode == 0, up.stderr
    assert ecst("stack", "env", env=env).returncode == 0  # writes pgpass
    paths = _private(home)
    assert all(p.exists() for p in paths), [str(p) for p in paths if not p.exists()]
    assert any((home / "kafka" / "data").glob("ecst-connect-configs-0/*.log"))
    assert (home / "logs" / "kafka.log").exists() and paths_for(home).log.exists()
    assert _exposed(paths) == []


def test_next_up_makes_a_home_left_readable_owner_only(mktemp_stack):
    home, env, up = mktemp_stack
    assert up.returncode == 0, up.stderr
    # what an earlier version left: 0755 folders, 0644 files (the Postgres data folder, 0700, aside)
    data = paths_for(home).data
    for top in _private(home):
        for folder, _, files in os.walk(top):
            if Path(folder) == data or data in Path(folder).parents:
                continue
            os.chmod(folder, 0o755)
            for name in files:
                Path(folder, name).chmod(0o644)
        if top.is_file():
            top.chmod(0o644)
    assert len(_exposed(_private(home))) > 10
    again = ecst("stack", "up", env=env)
    assert again.returncode == 0, again.stderr
    assert _exposed(_private(home)) == []


# -- what REPLICATION lets the connector role read (docs/security.md, least privilege) ---------
def test_the_connector_role_decodes_a_table_it_cannot_select(local):
    """Postgres semantics docs/security.md states: SELECT limits the snapshot, not the WAL."""
    pg = local.stack.postgres
    uid = uuid.uuid4().hex[:10]
    table, slot = f"private_{uid}", f"ecst_probe_{uid}"
    with pg.connect() as admin:
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, email text)")
        try:
            with psycopg.connect(pg.conninfo(), user=CONNECTOR_ROLE, password=pg.connector_password,
                                 autocommit=True) as role:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    role.execute(f"SELECT * FROM {table}")
                role.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
                try:
                    admin.execute(f"INSERT INTO {table} VALUES (1, 'alice@example.com')")
                    # the stack commits asynchronously: decoding sees the commit once it is flushed
                    changes: list[str] = []
                    deadline = time.monotonic() + 15
                    while not any("alice" in c for c in changes) and time.monotonic() < deadline:
                        changes += [row[0] for row in role.execute(
                            "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL)", (slot,))]
                        time.sleep(0.2)
                finally:
                    role.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        finally:
            admin.execute(f"DROP TABLE {table}")
    assert any("alice@example.com" in change for change in changes), changes


def test_the_connector_role_cannot_copy_the_cluster_with_pg_basebackup(local, tmp_path):
    """The stack's pg_hba.conf allows no physical replication connection (docs/security.md)."""
    pg = local.stack.postgres
    basebackup = find_bindir(install=False) / "pg_basebackup"
    run = subprocess.run([str(basebackup), "-h", "127.0.0.1", "-p", str(pg.port), "-U", CONNECTOR_ROLE,
                          "-D", str(tmp_path / "copy"), "-w"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PGPASSWORD": pg.connector_password})
    assert run.returncode != 0 and "no pg_hba.conf entry for replication connection" in run.stderr, run.stderr
    assert not (tmp_path / "copy" / "PG_VERSION").exists()

"""`ecst connectors doctor` on a correctly set-up database, and on databases with each problem."""

import json
import os
import socket
import subprocess

import pytest
import yaml

from ecst.stack.postgres import CONNECTOR_ROLE, PostgresCluster
from tests.integration.cli import ECST


def doctor(definition_doc, tmp_path, *extra, env=None):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(definition_doc))
    r = subprocess.run([*ECST, "connectors", "doctor", "-f", str(f), "-o", "json", *extra],
                       capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    report = json.loads(r.stdout) if r.stdout.strip() else []
    findings = {}
    for f_ in (report[0]["findings"] if report else []):
        findings.setdefault(f_["check"], []).append(f_)
    return r, findings


def statuses(findings, check):
    return [f["status"] for f in findings.get(check, [])]


def test_a_correctly_set_up_database_passes(capture, tmp_path):
    capture.create(rows=10)
    capture.apply()
    r, findings = doctor(capture.doc, tmp_path, "--role", CONNECTOR_ROLE)
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("wal_level", "role", "select", "signal", "publication", "primary_key", "heartbeat"):
        assert statuses(findings, check) == ["ok"], (check, findings.get(check))
    # the signal and heartbeat tables are in the publication by design: "exactly" allows them
    assert capture.signal_table in findings["publication"][0]["message"]
    assert "public.ecst_heartbeat" in findings["publication"][0]["message"]
    assert findings["heartbeat"][0]["message"] == \
        "heartbeats every 10000 ms, each writing public.ecst_heartbeat"
    # the local stack bounds what a slot may retain
    assert findings["wal_keep"] == [{"check": "wal_keep", "status": "ok", "fix": None, "message":
                                     "max_slot_wal_keep_size is 4GB: a slot further behind is invalidated "
                                     "instead of filling the disk (its connector must then snapshot again)"}]
    assert statuses(findings, "replica_identity") == ["warn"]  # DEFAULT identity, text columns
    slot = capture.doc["config"]["slot.name"]
    assert any(slot in f["message"] and f["status"] == "ok" for f in findings["slot_wal"])


def test_a_superuser_connector_role_is_reported(capture, tmp_path):
    capture.create(rows=1)
    role = f"su_{capture.uid}"
    capture.conn.execute(f"CREATE ROLE {role} WITH LOGIN SUPERUSER REPLICATION")
    try:
        r, findings = doctor(capture.doc, tmp_path, "--role", role)
    finally:
        capture.conn.execute(f"DROP ROLE {role}")
    assert r.returncode == 1
    [finding] = findings["role"]
    assert finding["status"] == "fail" and "is a superuser" in finding["message"]
    assert "CREATE ROLE cdc LOGIN REPLICATION" in finding["fix"]


def test_a_table_without_primary_key_and_a_wrong_publication_are_reported(capture, tmp_path):
    table = f"nopk_{capture.uid}"
    capture.conn.execute(f"CREATE TABLE {table} (a int, b text)")
    capture.conn.execute(f"GRANT SELECT ON {table} TO {CONNECTOR_ROLE}")
    doc = {**capture.doc, "config": {**capture.doc["config"], "table.include.list": f"public.{table}",
                                     "publication.name": f"pub_{capture.uid}"}}
    capture.conn.execute(f"CREATE PUBLICATION pub_{capture.uid} FOR TABLE {table}")
    try:
        r, findings = doctor(doc, tmp_path, "--role", CONNECTOR_ROLE)
        missing_pub = {**doc, "config": {**doc["config"], "publication.name": f"none_{capture.uid}"}}
        _, no_pub = doctor(missing_pub, tmp_path, "--role", CONNECTOR_ROLE)
    finally:
        capture.conn.execute(f"DROP PUBLICATION pub_{capture.uid}")
        capture.conn.execute(f"DROP TABLE {table}")
    assert r.returncode == 1
    [pk] = findings["primary_key"]
    assert pk["status"] == "fail" and f"public.{table} has no primary key" in pk["message"]
    [pub] = no_pub["publication"]
    assert pub["status"] == "fail" and f"CREATE PUBLICATION none_{capture.uid} FOR TABLE public.{table}" \
        in pub["fix"]


def test_a_lagging_inactive_slot_is_reported(capture, tmp_path):
    capture.create(rows=10)
    slot = f"lag_{capture.uid}"
    capture.conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        capture.conn.execute(f"INSERT INTO {capture.table} (email, full_name) "
                             "SELECT 'w' || g || '@x', repeat('x', 200) FROM generate_series(1, 2000) g")
        r, findings = doctor(capture.doc, tmp_path, "--role", CONNECTOR_ROLE, "--max-retained-wal", "100000")
    finally:
        capture.conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    assert r.returncode == 1
    [lagging] = [f for f in findings["slot_wal"] if slot in f["message"]]
    assert lagging["status"] == "fail" and "INACTIVE" in lagging["message"]
    assert f"pg_drop_replication_slot('{slot}')" in lagging["fix"]


@pytest.fixture
def replica_cluster(tmp_path):
    """A second, private cluster with wal_level=replica."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = PostgresCluster(tmp_path / "replica-home", port, "admin-pw-123", "conn-pw-123")
    cluster.ensure_created()
    cluster.start()
    with cluster.connect("postgres") as conn:
        conn.execute("ALTER SYSTEM SET wal_level = replica")
    cluster.stop()
    cluster.start()
    yield cluster
    cluster.stop()


def test_wal_level_replica_is_reported(capture, tmp_path, replica_cluster):
    with replica_cluster.connect() as conn:
        assert conn.execute("SHOW wal_level").fetchone()[0] == "replica"
    url = f"postgresql://ecst:admin-pw-123@127.0.0.1:{replica_cluster.port}/producer"
    r, findings = doctor(capture.doc, tmp_path, "--role", CONNECTOR_ROLE, "--producer-url", url)
    assert r.returncode == 1
    [wal] = findings["wal_level"]
    assert wal["status"] == "fail" and wal["message"] == "wal_level is replica: logical decoding is off"
    assert wal["fix"] == "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
    assert "admin-pw-123" not in r.stdout + r.stderr


def test_a_signal_table_the_connector_cannot_write_is_reported(capture, tmp_path):
    capture.create(rows=1)
    capture.conn.execute(f'REVOKE INSERT ON "{capture.signal_table}" FROM {CONNECTOR_ROLE}')
    r, findings = doctor(capture.doc, tmp_path, "--role", CONNECTOR_ROLE)
    assert r.returncode == 1
    [finding] = findings["signal"]
    assert finding["status"] == "fail" and "cannot INSERT" in finding["message"]
    assert finding["fix"] == f"GRANT SELECT, INSERT ON public.{capture.signal_table} TO {CONNECTOR_ROLE}"


def test_keys_from_message_key_columns_or_a_unique_index_pass_and_a_missing_column_fails(capture, tmp_path):
    nokey, unique, keyed = f"nokey_{capture.uid}", f"uq_{capture.uid}", f"pk_{capture.uid}"
    for table in (nokey, unique, keyed):
        capture.conn.execute(f"CREATE TABLE {table} (a int NOT NULL, b text)")
        capture.conn.execute(f"GRANT SELECT ON {table} TO {CONNECTOR_ROLE}")
    capture.conn.execute(f"CREATE UNIQUE INDEX {unique}_a ON {unique} (a)")  # Debezium keys by it
    capture.conn.execute(f"ALTER TABLE {keyed} ADD PRIMARY KEY (a)")

    def config(table, **extra):
        return {**capture.doc, "config": {**capture.doc["config"], "table.include.list": f"public.{table}",
                                          **extra}}

    try:
        _, by_columns = doctor(config(nokey, **{"message.key.columns": f"public.{nokey}:a"}), tmp_path)
        _, by_index = doctor(config(unique), tmp_path)
        _, missing = doctor(config(nokey, **{"message.key.columns": f"public.{nokey}:id"}), tmp_path)
        _, other = doctor(config(keyed, **{"message.key.columns": f"public.{keyed}:b"}), tmp_path)
    finally:
        capture.conn.execute(f"DROP TABLE {nokey}, {unique}, {keyed}")
    [pk] = missing["primary_key"]
    assert pk["status"] == "fail" and pk["message"] == (
        f"message.key.columns names id for public.{nokey}, which has no such column (columns: a, b)")
    [pk] = by_index["primary_key"]
    assert pk["status"] == "ok" and pk["message"] == f"public.{unique} has a key: unique index {unique}_a (a)"
    [pk] = by_columns["primary_key"]
    assert pk["status"] == "ok" and pk["message"] == f"public.{nokey} has a key: message.key.columns (a)"
    # no primary key and REPLICA IDENTITY DEFAULT: the producer's own UPDATE/DELETE would fail
    [ri] = by_columns["replica_identity"]
    assert ri["status"] == "warn" and "UPDATE and DELETE" in ri["message"]
    assert f"ALTER TABLE public.{nokey} REPLICA IDENTITY FULL" in ri["fix"]
    # a key other than the primary key: deletes (REPLICA IDENTITY DEFAULT) carry only the primary key
    [pk] = other["primary_key"]
    assert pk["status"] == "ok" and pk["message"] == f"public.{keyed} has a key: message.key.columns (b)"
    [ri] = other["replica_identity"]
    assert ri["status"] == "warn" and ri["message"].startswith(f"deletes from public.{keyed} carry the old "
                                                               "values of a only")


def test_a_heartbeat_table_outside_the_publication_or_not_writable_is_reported(capture, tmp_path):
    capture.create(rows=1)
    pub = capture.doc["config"]["publication.name"]
    capture.conn.execute(f"ALTER PUBLICATION {pub} DROP TABLE ecst_heartbeat")
    capture.conn.execute(f"REVOKE UPDATE ON ecst_heartbeat FROM {CONNECTOR_ROLE}")
    try:
        r, findings = doctor(capture.doc, tmp_path, "--role", CONNECTOR_ROLE)
    finally:
        capture.conn.execute(f"GRANT UPDATE ON ecst_heartbeat TO {CONNECTOR_ROLE}")
    assert r.returncode == 1
    [beat] = findings["heartbeat"]
    assert beat["status"] == "fail" and beat["message"].startswith(
        f"role {CONNECTOR_ROLE} cannot UPDATE heartbeat table public.ecst_heartbeat")
    [published] = findings["publication"]
    assert published["status"] == "fail" and "missing ['public.ecst_heartbeat']" in published["message"]
    assert published["fix"] == f"ALTER PUBLICATION {pub} ADD TABLE public.ecst_heartbeat"

"""`ecst connectors` verbs against the real Kafka Connect: validation, dry run, prune, pause,
resume, stop, restart, offsets, status with the replication slot, JSON output, contexts."""

import json

import yaml

from tests.integration.cli import ecst, write


def test_invalid_config_lists_errors_per_key_and_leaves_the_running_connector_alone(capture, tmp_path):
    capture.create(rows=10)
    capture.apply()
    before = capture.client.get_config(capture.definition.name)
    broken = {**capture.doc, "config": {**capture.doc["config"], "snapshot.mode": "sometimes"}}
    r = ecst("connectors", "apply", "-f", str(write(tmp_path / "c.yaml", broken)),
             "--connect-url", capture.client.url)
    assert r.returncode == 1
    assert f"Error: connector {capture.definition.name}" in r.stderr and "nothing was changed" in r.stderr
    assert "  snapshot.mode: The 'snapshot.mode' value is invalid: Value must be one of" in r.stderr
    assert capture.client.get_config(capture.definition.name) == before
    assert capture.client.status(capture.definition.name)["connector"]["state"] == "RUNNING"


def test_dry_run_validates_and_changes_nothing(capture, tmp_path):
    capture.create(rows=10)
    capture.apply()
    before = capture.client.get_config(capture.definition.name)
    edited = {**capture.doc, "config": {**capture.doc["config"], "heartbeat.interval.ms": 2000}}
    r = ecst("connectors", "apply", "--dry-run", "-f", str(write(tmp_path / "c.yaml", edited)),
             "--connect-url", capture.client.url, "-o", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"name": capture.definition.name, "action": "updated", "dry_run": True}]
    assert capture.client.get_config(capture.definition.name) == before


def test_prune_deletes_only_connectors_that_lost_their_definition(capture, tmp_path):
    capture.create(rows=10)
    capture.apply()
    folder = tmp_path / "defs"
    folder.mkdir()
    keep = write(folder / "keep.yaml", capture.doc)
    # a second connector on the same table, applied, then its file removed
    other = {**capture.doc, "name": f"{capture.definition.name}-old",
             "config": {**capture.doc["config"], "slot.name": f"{capture.doc['config']['slot.name']}_old",
                        "topic.prefix": f"{capture.doc['config']['topic.prefix']}old"}}
    gone = write(folder / "gone.yaml", other)
    url = ["--connect-url", capture.client.url]
    assert ecst("connectors", "apply", "-f", str(folder), *url).returncode == 0
    gone.unlink()
    selector = ["--selector", f"users-{capture.uid}*"]
    r = ecst("connectors", "apply", "-f", str(folder), "--prune", "--dry-run", *selector, *url)
    assert r.stdout.splitlines() == [f"connector/{capture.definition.name} unchanged",
                                     f"connector/{other['name']} deleted (dry run)"]
    assert other["name"] in capture.client.connectors()
    r = ecst("connectors", "apply", "-f", str(keep), "--prune", "--yes", *selector, *url)
    assert r.returncode == 0 and f"connector/{other['name']} deleted" in r.stdout
    names = capture.client.connectors()
    assert other["name"] not in names and capture.definition.name in names
    from ecst import source
    from ecst.connectors.slots import wait_for_slot_inactive

    wait_for_slot_inactive(capture.conn, other["config"]["slot.name"])
    source.drop_capture(capture.conn, other["config"]["slot.name"], "none")


def test_pause_resume_stop_restart_offsets_and_status(capture, stack):
    capture.create(rows=10)
    capture.apply()
    name, url = capture.definition.name, ["--connect-url", capture.client.url]

    def state():
        return json.loads(ecst("connectors", "status", name, "-o", "json", *url).stdout)["connector"]["state"]

    def wait(expected):
        import time

        deadline = time.monotonic() + 60
        while state() != expected:
            assert time.monotonic() < deadline, f"{name} never reached {expected}"
            time.sleep(0.5)

    status = ecst("connectors", "status", name, *url)
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"connector/{name} RUNNING on ") and lines[1].startswith("  task 0 RUNNING")
    assert lines[2].startswith(f"  slot {capture.doc['config']['slot.name']}: active, retains ")

    assert ecst("connectors", "pause", name, *url).stdout == f"connector/{name} paused\n"
    wait("PAUSED")
    assert ecst("connectors", "resume", name, *url).returncode == 0
    wait("RUNNING")
    r = ecst("connectors", "restart", name, "--failed-only", *url)
    assert r.stdout == f"connector/{name} restarted (failed only)\n"

    offsets = json.loads(ecst("connectors", "offsets", "get", name, "-o", "json", *url).stdout)
    assert offsets and "lsn" in json.dumps(offsets)
    refused = ecst("connectors", "offsets", "reset", name, *url)
    assert refused.returncode == 1 and "stop it first" in refused.stderr
    assert ecst("connectors", "stop", name, *url).returncode == 0
    wait("STOPPED")
    assert ecst("connectors", "offsets", "reset", name, *url).stdout == f"connector/{name} offsets reset\n"
    assert json.loads(ecst("connectors", "offsets", "get", name, "-o", "json", *url).stdout) == []

    listed = json.loads(ecst("connectors", "list", "-o", "json", *url).stdout)
    assert {"name": name, "state": "STOPPED", "tasks": []} in listed
    described = json.loads(ecst("connectors", "describe", name, "-o", "json", *url).stdout)
    assert described["config"]["database.password"] == "${env:ECST_CONNECTOR_PASSWORD}"


def test_contexts_select_a_cluster_and_unknown_ones_are_named(capture, tmp_path):
    contexts = tmp_path / "contexts.yaml"
    contexts.write_text(yaml.safe_dump({"current": "nowhere", "contexts": {
        "it": {"url": capture.client.url}, "nowhere": {"url": "http://127.0.0.1:9"}}}))
    env = {"ECST_CONTEXTS": str(contexts), "ECST_CONNECT_URL": ""}
    assert ecst("connectors", "list", "--context", "it", env=env).returncode == 0
    r = ecst("connectors", "list", env=env)
    assert r.returncode == 1 and "Couldn't connect to Kafka Connect at http://127.0.0.1:9" in r.stderr
    r = ecst("connectors", "list", "--context", "staging", env=env)
    assert r.returncode == 1 and "no context 'staging' with a url (known: it, nowhere)" in r.stderr


def test_a_task_that_fails_prints_its_trace_and_exits_1(capture, tmp_path):
    from ecst import source
    from ecst.stack.postgres import CONNECTOR_ROLE

    # the table exists and the role may read it, but nobody created the publication
    source.create_users_table(capture.conn, capture.table, 1)
    capture.conn.execute(f"GRANT SELECT ON {capture.table} TO {CONNECTOR_ROLE}")
    r = ecst("connectors", "apply", "-f", str(write(tmp_path / "c.yaml", capture.doc)),
             "--connect-url", capture.client.url, "--wait", "90")
    assert r.returncode == 1, r.stdout + r.stderr
    first, *trace = r.stderr.splitlines()
    assert first.startswith(f"Error: connector {capture.definition.name}") and "FAILED" in first
    assert trace and any("publication" in line.lower() for line in trace), r.stderr


def test_a_failed_task_is_fixed_by_applying_the_corrected_config(capture, tmp_path):
    # the runbook's "Connector task failed" with a fix in the YAML: a transform that cannot handle
    # the records fails the task at the first change; applying the corrected file must end RUNNING
    # (Connect reports the old task's FAILED for a moment after the update: not a new failure)
    import time

    capture.create(rows=10)
    capture.apply()
    name, url = capture.definition.name, ["--connect-url", capture.client.url]
    cast = "org.apache.kafka.connect.transforms.Cast$Value"  # "c", "u"… are no numbers
    broken = {**capture.doc, "config": {**capture.doc["config"], "transforms": "op",
                                        "transforms.op.type": cast, "transforms.op.spec": "op:int32"}}
    applied = ecst("connectors", "apply", "-f", str(write(tmp_path / "broken.yaml", broken)), *url)
    assert applied.returncode == 0, applied.stderr
    capture.conn.execute(f"UPDATE {capture.table} SET full_name = full_name || '!'")
    deadline = time.monotonic() + 60
    while [t["state"] for t in capture.client.status(name)["tasks"]] != ["FAILED"]:
        assert time.monotonic() < deadline, "the transform did not fail the task"
        time.sleep(0.5)
    status = ecst("connectors", "status", name, *url).stdout.splitlines()
    assert status[1].startswith("  task 0 FAILED on ") and 'For input string: "u"' in status[1], status
    assert status[-1].startswith("  next: fix the cause")
    assert f"ecst connectors restart {name} --failed-only" in status[-1]
    fixed = ecst("connectors", "apply", "-f", str(write(tmp_path / "c.yaml", capture.doc)), *url)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout == f"connector/{name} updated\n"
    status = capture.client.status(name)
    assert [t["state"] for t in status["tasks"]] == ["RUNNING"]

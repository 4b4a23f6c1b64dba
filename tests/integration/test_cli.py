"""The CLI against the real stack: apply's created/updated/unchanged, consume, bad input."""


from tests.integration.cli import ecst, write


def test_apply_reports_created_unchanged_updated_and_consume_catches_up(capture, tmp_path, stack):
    capture.create(rows=200)
    f = write(tmp_path / "users.yaml", capture.doc)
    url = ["--connect-url", stack.connect_url]

    first = ecst("connectors", "apply", "-f", str(f), *url)
    assert (first.returncode, first.stdout) == (0, f"connector/{capture.definition.name} created\n")
    second = ecst("connectors", "apply", "-f", str(f), *url)
    assert (second.returncode, second.stdout) == (0, f"connector/{capture.definition.name} unchanged\n")

    capture.doc["config"]["heartbeat.interval.ms"] = 5000
    write(f, capture.doc)
    plan = ecst("connectors", "plan", "-f", str(f), *url)
    assert plan.returncode == 2
    assert "  ~ heartbeat.interval.ms: 10000 -> 5000" in plan.stdout
    third = ecst("connectors", "apply", "-f", str(f), *url)
    assert (third.returncode, third.stdout) == (0, f"connector/{capture.definition.name} updated\n")
    assert capture.client.get_config(capture.definition.name)["heartbeat.interval.ms"] == "5000"

    state = tmp_path / "state.db"
    run = ecst("consume", "--state-url", f"sqlite:///{state}", "--topic", capture.topic,
               "--bootstrap-servers", stack.bootstrap, "--until-ready")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("applied ")
    from ecst.consumer.store import StateStore

    store = StateStore(f"sqlite:///{state}")
    result = capture.compare(store)
    store.close()
    assert result.matches, result.summary()


def test_bad_definitions_change_nothing_in_the_cluster(capture, tmp_path, stack):
    capture.create(rows=10)
    capture.apply()
    before = (capture.client.connectors(), capture.client.get_config(capture.definition.name))
    url = ["--connect-url", stack.connect_url]

    syntax = write(tmp_path / "syntax.yaml", "name: x\nconfig:\n  connector.class: [\n")
    r = ecst("connectors", "apply", "-f", str(syntax), *url)
    assert r.returncode == 1 and f"Error: {syntax}: YAML syntax error at line" in r.stderr

    unknown = write(tmp_path / "unknown.yaml", {**capture.doc, "spec": {}})
    r = ecst("connectors", "apply", "-f", str(unknown), *url)
    assert r.returncode == 1 and "unknown top-level key 'spec'" in r.stderr

    # a valid file listed before a broken one: nothing is sent, because all are checked first
    changed = {**capture.doc, "config": {**capture.doc["config"], "heartbeat.interval.ms": 1}}
    ok = write(tmp_path / "a.yaml", changed)
    r = ecst("connectors", "apply", "-f", str(ok), "-f", str(syntax), *url)
    assert r.returncode == 1

    assert (capture.client.connectors(), capture.client.get_config(capture.definition.name)) == before


def test_consume_with_unreachable_kafka_is_a_clear_error(tmp_path):
    r = ecst("consume", "--state-url", f"sqlite:///{tmp_path / 's.db'}", "--bootstrap-servers",
             "127.0.0.1:1", "--until-caught-up")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("Error: couldn't connect to Kafka at 127.0.0.1:1")


def test_no_secret_value_appears_in_plan_errors_or_logs(capture, tmp_path, stack):
    capture.create(rows=1)
    capture.apply()
    literal = "literal-s3cret-password"
    doc = {**capture.doc, "config": {**capture.doc["config"], "database.password": literal}}
    f = write(tmp_path / "c.yaml", doc)
    plan = ecst("-vv", "connectors", "plan", "-f", str(f), "--connect-url", stack.connect_url)
    assert plan.returncode == 2
    assert "  ~ database.password: ${env:ECST_CONNECTOR_PASSWORD} -> ***" in plan.stdout
    # applying it fails validation (wrong password): the error names the key, never the value
    bad = ecst("-vv", "connectors", "apply", "-f", str(f), "--connect-url", stack.connect_url)
    out = plan.stdout + plan.stderr + bad.stdout + bad.stderr
    assert literal not in out
    describe = ecst("connectors", "describe", capture.definition.name, "--connect-url", stack.connect_url)
    assert "database.password: ${env:ECST_CONNECTOR_PASSWORD}" in describe.stdout


def test_a_mapping_the_records_do_not_fit_is_refused_before_anything_is_written(capture, tmp_path, stack):
    capture.create(rows=50)
    capture.apply()
    warm = tmp_path / "warm.db"  # the topic holds the snapshot before the mappings are tried
    assert ecst("consume", "--state-url", f"sqlite:///{warm}", "--topic", capture.topic,
                "--bootstrap-servers", stack.bootstrap, "--until-ready").returncode == 0
    state = tmp_path / "state.db"

    def consume_with(topic_mapping):
        cfg = write(tmp_path / "consumer.yaml", {
            "kafka": {"bootstrap_servers": stack.bootstrap, "group_id": f"g-{capture.uid}"},
            "state": {"url": f"sqlite:///{state}"}, "topics": [{"topic": capture.topic, **topic_mapping}]})
        return ecst("consume", "-c", str(cfg), "--until-caught-up")

    # a key the records do not have: one line naming topic and column; the state is not even created
    run = consume_with({"key": ["account_id"], "columns": ["account_id", "email"]})
    assert run.returncode == 1 and not state.exists()
    assert run.stderr.splitlines() == [
        f"Error: topic {capture.topic}: key column 'account_id' (topics[].key) is not in its records (they "
        "have id, email, full_name, country, balance, active, birth_date, last_login, created_at, "
        "updated_at): fix the consumer config"], run.stderr
    run = consume_with({"columns": ["id", "emial"]})
    assert run.returncode == 1 and not state.exists()
    assert "column 'emial' (topics[].columns) is not in its records" in run.stderr
    # the right mapping catches up; then a wrong one is refused all the same, state unchanged
    assert consume_with({"key": ["email"], "columns": ["email", "full_name"]}).returncode == 0
    before = state.read_bytes()
    run = consume_with({"key": ["account_id"]})
    assert run.returncode == 1 and "key column 'account_id'" in run.stderr
    # a delete carries only its record key for certain (its `before` says email = ''): a state keyed
    # by email cannot follow it
    capture.conn.execute(f'DELETE FROM "{capture.table}" WHERE id = 7')
    run = consume_with({"key": ["email"], "columns": ["email", "full_name"]})
    assert run.returncode == 1, run.stdout
    assert run.stderr.splitlines() == [
        f"Error: topic {capture.topic}: key column 'email' (topics[].key) is not in the key of its delete "
        "records (id): a delete carries only its record key for certain (Debezium fills the other columns "
        "of `before` with type defaults under REPLICA IDENTITY DEFAULT), so a state keyed otherwise cannot "
        "follow deletes; use the record key's columns as the key"], run.stderr
    assert state.read_bytes() == before

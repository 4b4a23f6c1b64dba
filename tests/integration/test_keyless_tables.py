"""A captured table without a primary key, on the real stack (issue 9, point 4): `connectors apply`,
`plan` and `--dry-run` refuse it before anything exists in Connect; `message.key.columns` gives it
a key that works end to end; `ecst consume` says why the topic of a failed connector yields nothing,
and stops in one line on records without a key."""

import time
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql

from ecst.connectors import apply as apply_mod
from ecst.connectors.definition import parse_definition
from tests.integration.cli import ecst, free_port, write
from tests.integration.conftest import Capture
from tests.integration.test_doctor import doctor, statuses

# An append-only history table, as producers have them: no primary key.
HISTORY = """CREATE TABLE {t} (
    stream  text NOT NULL,
    seq     integer NOT NULL,
    kind    text NOT NULL,
    amount  numeric(12, 2),
    note    text,
    at      timestamptz NOT NULL
)"""
ROWS = """INSERT INTO {t} (stream, seq, kind, amount, note, at)
SELECT 's' || (g % 7), g, (ARRAY['open', 'pay', 'close'])[1 + g % 3],
       CASE WHEN g % 5 = 0 THEN NULL ELSE g * 1.25 END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'event ' || g END,
       timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute 0.25 seconds'
FROM generate_series({start}, {stop}) AS g"""
KEY = ["stream", "seq"]




@pytest.fixture
def history(stack):
    """A Capture of a keyless history table (created by each test, so it can choose the rows)."""
    uid = uuid.uuid4().hex[:10]
    c = Capture(stack, uid, table=f"history_{uid}")
    yield c
    c.close()


def create_history(capture, rows, *, replica_identity_full=False):
    t = sql.Identifier(capture.table)
    capture.conn.execute(sql.SQL(HISTORY).format(t=t))
    if replica_identity_full:
        capture.conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(t))
    add_rows(capture, 1, rows)
    capture.prepare()


def add_rows(capture, start, stop):
    capture.conn.execute(sql.SQL(ROWS).format(t=sql.Identifier(capture.table), start=sql.Literal(start),
                                              stop=sql.Literal(stop)))


def with_config(capture, **config):
    """The capture's connector document with config keys changed (dots spelled as __)."""
    capture.doc["config"].update({k.replace("__", "."): v for k, v in config.items()})
    capture.definition = parse_definition(capture.doc, environ={})
    return capture.doc


def nothing_created(capture):
    assert capture.definition.name not in capture.client.connectors()
    slot = capture.doc["config"]["slot.name"]
    assert capture.conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                (slot,)).fetchone() is None


def one_line(r):
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_apply_plan_and_dry_run_refuse_a_table_without_a_key_and_create_nothing(history, tmp_path):
    create_history(history, rows=10)
    keyed = f"{history.table}_keyed"
    history.conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(keyed)))
    try:
        # a regex include list, as Debezium reads it: it matches both tables, only one lacks a key
        doc = with_config(history, table__include__list=f"public\\.{history.table}.*")
        path = write(tmp_path / "history.yaml", doc)
        url = ["--connect-url", history.client.url]
        runs = {"apply": ecst("connectors", "apply", "-f", str(path), *url),
                "dry run": ecst("connectors", "apply", "--dry-run", "-f", str(path), *url),
                "plan": ecst("connectors", "plan", "-f", str(path), *url)}
    finally:
        history.conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(keyed)))
    table = f"public.{history.table}"
    for what, r in runs.items():
        assert r.returncode == 1, (what, r.stdout, r.stderr)
        assert r.stdout == "", what
        line = one_line(r)
        assert line.startswith(f"Error: connector {history.definition.name} ({path}) captures {table}, "
                               "which has no primary key"), (what, line)
        assert "nothing was changed" in line
        assert f"set message.key.columns: {table}:<column>[,<column>]" in line
        assert f"ALTER TABLE {table} REPLICA IDENTITY FULL" in line and "USING INDEX" in line
        assert f"{table}_keyed" not in line
    nothing_created(history)


def test_message_key_columns_naming_a_missing_column_is_refused(history, tmp_path):
    create_history(history, rows=10)
    doc = with_config(history, message__key__columns=f"public.{history.table}:stream,sequence")
    r = ecst("connectors", "apply", "-f", str(write(tmp_path / "h.yaml", doc)),
             "--connect-url", history.client.url)
    assert r.returncode == 1, r.stdout + r.stderr
    line = one_line(r)
    assert line.startswith(f"Error: connector {history.definition.name} ({tmp_path / 'h.yaml'}): "
                           f"message.key.columns names sequence for public.{history.table}, which has "
                           "no such column"), line
    assert "stream, seq, kind, amount, note, at" in line
    nothing_created(history)


def test_apply_needs_the_producer_database_or_an_explicit_skip(capture, tmp_path):
    capture.create(rows=5)
    path = write(tmp_path / "c.yaml", capture.doc)
    url = ["--connect-url", capture.client.url]
    # a platform team's machine: Connect is reachable, no local stack, no producer URL
    away = {"ECST_HOME": str(tmp_path / "no-stack"), "ECST_PRODUCER_URL": ""}

    unknown = ecst("connectors", "apply", "-f", str(path), *url, env=away)
    assert unknown.returncode == 1
    line = one_line(unknown)
    assert line.startswith("Error: ") and "producer database" in line
    assert "--producer-url" in line and "ECST_PRODUCER_URL" in line and "--skip-key-check" in line
    nothing_created(capture)

    unreachable = ecst("connectors", "apply", "-f", str(path), *url, "--producer-url",
                       f"postgresql://ecst@127.0.0.1:{free_port()}/producer", env=away)
    assert unreachable.returncode == 1
    line = one_line(unreachable)
    assert line.startswith("Error: cannot reach the producer database") and "--skip-key-check" in line
    nothing_created(capture)

    skipped = ecst("connectors", "apply", "-f", str(path), *url, "--skip-key-check", "--wait", "0", env=away)
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout == f"connector/{capture.definition.name} created\n"
    assert one_line(skipped).startswith("Warning: the captured tables' keys were not checked")


def test_message_key_columns_give_a_keyless_table_a_key_end_to_end(history, state_store, tmp_path):
    # 300 rows exist before the connector; REPLICA IDENTITY FULL so that updates and deletes work
    create_history(history, rows=300, replica_identity_full=True)
    table = f"public.{history.table}"
    doc = with_config(history, message__key__columns=f"{table}:stream,seq")
    r = ecst("connectors", "apply", "-f", str(write(tmp_path / "h.yaml", doc)),
             "--connect-url", history.client.url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == f"connector/{history.definition.name} created\n"

    # the doctor agrees: the table has a key, and its replica identity covers it
    _, findings = doctor(doc, tmp_path)
    assert statuses(findings, "primary_key") == ["ok"], findings["primary_key"]
    assert "message.key.columns (stream, seq)" in findings["primary_key"][0]["message"]
    assert statuses(findings, "replica_identity") == ["ok"], findings["replica_identity"]

    # snapshot: every row, keyed by (stream, seq), every column equal (NULLs included)
    history.consumer(state_store).run(until_ready=True)
    snap = history.compare(state_store, KEY)
    assert snap.matches, snap.summary()
    assert snap.state_rows == 300

    # streamed inserts, updates (to NULL too), deletes, and an update of a key column
    add_rows(history, 301, 340)
    for change in ("UPDATE {} SET amount = amount + 1, note = NULL WHERE seq % 10 = 3",
                   "UPDATE {} SET note = 'changed', amount = NULL WHERE seq % 10 = 4",
                   "DELETE FROM {} WHERE seq % 10 = 7",
                   "UPDATE {} SET seq = seq + 1000 WHERE seq = 11"):
        history.conn.execute(sql.SQL(change).format(sql.Identifier(history.table)))
    result = history.converge(state_store, key=KEY)
    assert result.matches, result.summary()
    assert result.state_rows == 340 - 34


def wait_for(condition, what, timeout_s=90):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.5)
    return found


def failed_task(capture):
    tasks = (capture.client.status(capture.definition.name) or {}).get("tasks", [])
    return next((t for t in tasks if t.get("state") == "FAILED"), None)


def records_in(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def test_consume_says_why_the_topic_of_a_failed_connector_yields_nothing(history, stack, tmp_path):
    # the connector as it was created before apply checked keys (the library call does not check)
    create_history(history, rows=10)
    apply_mod.apply(history.client, history.definition, wait_s=0)
    task = wait_for(lambda: failed_task(history), "the task failing")
    assert "Compacted topic cannot accept message without key" in task["trace"]

    # consume logs at INFO by default (a line per batch, rebalances): WARNING leaves the message alone
    r = ecst("consume", "--topic", history.topic, "--state-url", f"sqlite:///{tmp_path / 'state.db'}",
             "--bootstrap-servers", stack.bootstrap, "--group", f"g-{history.uid}", "--until-caught-up",
             "--log-level", "WARNING")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("applied 0 records")
    line = one_line(r)
    assert line.startswith(f"Warning: topic {history.topic} holds no records"), line
    assert "ecst connectors status" in line and "FAILED" in line


def test_records_without_a_key_stop_the_consumer_with_one_line(history, stack, tmp_path):
    # a non-compacted topic accepts the null keys; the consumer cannot apply them
    create_history(history, rows=10)
    with_config(history, topic__creation__default__cleanup__policy="delete")
    apply_mod.apply(history.client, history.definition)
    wait_for(lambda: records_in(stack.bootstrap, history.topic) >= 10, "the snapshot reaching the topic")

    # consume logs at INFO by default (a line per batch, rebalances): WARNING leaves the message alone
    r = ecst("consume", "--topic", history.topic, "--state-url", f"sqlite:///{tmp_path / 'state.db'}",
             "--bootstrap-servers", stack.bootstrap, "--group", f"g-{history.uid}", "--until-caught-up",
             "--log-level", "WARNING")
    assert r.returncode == 1, r.stdout + r.stderr
    line = one_line(r)
    assert line.startswith(f"Error: {history.topic}["), line
    assert f"change to '{history.table}' has no key: the table needs a primary key (or " \
           "message.key.columns on the connector)" in line

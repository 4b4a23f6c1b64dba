"""Fault scenarios on the real local stack (issue 10). In each, a writer keeps changing users
(it starts before the connector creates its slot), faults are injected, and afterwards the state
must equal the producer's table on every column of every row: zero mismatches."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from tests.faults.harness import (
    FAULTS,
    Outcome,
    kill_connect,
    kill_consumer,
    size,
    wait_until,
)
from tests.integration.cli import ecst, write


def check(outcome: Outcome, outcomes: list[Outcome]) -> None:
    outcomes.append(outcome)
    assert outcome.recovered == outcome.faults_injected, outcome
    assert outcome.mismatches == 0, outcome.detail


def test_consumer_killed_during_snapshot_and_streaming(pipeline, outcomes):
    p = pipeline().start(rows=max(size()["rows"], 10000))  # a snapshot long enough to be hit
    for _ in range(2):  # during the snapshot: the service is not ready yet
        time.sleep(random.uniform(1.0, 2.5))
        p.fault("consumer kill -9 (snapshot)", lambda: kill_consumer(p, pause_s=0.5))
    p.ready()
    for _ in range(2):  # during streaming
        time.sleep(random.uniform(2.0, 5.0))
        p.fault("consumer kill -9 (streaming)", lambda: kill_consumer(p))
    check(p.settle(Outcome("consumer kill -9, snapshot and streaming")), outcomes)


@pytest.mark.parametrize(("fault", "scenario"), [("Connect kill -9", "Connect worker kill -9"),
                                                 ("broker kill -9", "broker kill -9"),
                                                 ("walsender terminated", "walsender terminated")])
def test_one_fault_while_streaming(pipeline, outcomes, fault, scenario):
    p = pipeline().start()
    p.ready()
    time.sleep(3)
    p.fault(fault, lambda: FAULTS[fault](p))
    check(p.settle(Outcome(scenario)), outcomes)


def test_postgres_fast_and_immediate_restarts(pipeline, outcomes):
    p = pipeline().start()
    p.ready()
    for mode in ("Postgres fast restart", "Postgres immediate restart"):
        time.sleep(3)
        p.fault(mode, lambda mode=mode: FAULTS[mode](p))
        wait_until(lambda: p.prober.recovered_at(p.faults[-1][1]), 180, f"recovery from {mode}")
    check(p.settle(Outcome("Postgres fast and immediate restarts")), outcomes)


def test_connect_unreachable_during_apply(pipeline, outcomes, logs, tmp_path):
    # Connect is down when `connectors apply` runs: one line, exit 1, nothing created; once
    # Connect is back, the same command creates the connector and the pipeline catches up.
    p = pipeline()
    p.capture.create(rows=size()["rows"])
    p.writer.start()
    worker = p.stack.stack.connect
    definition = write(tmp_path / "users.yaml", p.capture.doc)
    args = ["connectors", "apply", "-f", str(definition), "--connect-url", p.stack.connect_url]
    p.faults.append(("Connect unreachable during apply", time.time()))
    kill_connect(p, restart=False)
    refused = ecst(*args)
    (logs / f"apply-unreachable-{p.capture.uid}.log").write_text(refused.stdout + refused.stderr)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("Error: Couldn't connect to Kafka Connect at"), refused.stderr
    worker.start()
    assert p.capture.definition.name not in p.capture.client.connectors()  # nothing half-applied
    again = ecst(*args)
    (logs / f"apply-again-{p.capture.uid}.log").write_text(again.stdout + again.stderr)
    assert again.returncode == 0 and again.stdout.endswith("created\n"), again.stdout + again.stderr
    p.consumer.start()
    p.prober.start()
    check(p.settle(Outcome("Connect REST unreachable during apply")), outcomes)


POISON = {
    "invalid JSON": (b'{"id": 900001}', b"this is not JSON"),
    "wrong type": (b'{"id": "not-a-number"}', json.dumps({
        "op": "c", "source": {"table": "{table}", "lsn": 10**12, "sequence": '["1","1"]'},
        "after": {"id": "not-a-number", "email": "x"}}).encode()),
    "unknown op": (b'{"id": 900003}', json.dumps({
        "op": "x", "source": {"table": "{table}", "lsn": 10**12}, "after": {"id": 900003}}).encode()),
    "missing key": (b"{}", json.dumps({  # (a compacted topic refuses a null key itself)
        "op": "c", "source": {"table": "{table}", "lsn": 10**12, "sequence": '["1","1"]'},
        "after": {"id": 900004, "email": "y"}}).encode()),
    "5 MB value": (b'{"id": 900005}', b'{"op": "c", "junk": "' + b"x" * (5 * 1024 * 1024) + b'"}'),
}


def test_poison_records_are_dead_lettered_and_nothing_good_is_lost(pipeline, outcomes, stack):
    # a Postgres state, as in production: SQLite would take the text into the bigint column
    url, drop = stack.new_database(f"state_{uuid.uuid4().hex[:10]}")
    dlq = f"ecst.dlq.{uuid.uuid4().hex[:10]}"
    p = pipeline("--dead-letter-topic", dlq, state_url=url)
    p.on_close(drop)
    p.start()
    p.ready()
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, p.capture.topic,
                                        configs={"max.message.bytes": str(8 * 1024 * 1024)})])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, max_request_size=8 * 1024 * 1024)
    for key, value in POISON.values():
        producer.send(p.capture.topic, key=key, value=value.replace(b"{table}", p.capture.table.encode()),
                      partition=0)
    producer.flush()
    producer.close()
    p.faults.append(("poison records", time.time()))
    outcome = p.settle(Outcome("poison records", poison_injected=len(POISON)))
    reader = KafkaConsumer(dlq, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest",
                           consumer_timeout_ms=10000, max_partition_fetch_bytes=16 * 1024 * 1024)
    dead = [dict(m.headers) for m in reader]
    reader.close()
    outcome.dead_lettered = len(dead)
    outcomes.append(outcome)
    assert outcome.dead_lettered == len(POISON), dead
    assert all(h.get("ecst.error") for h in dead)
    check(outcome, [])


@pytest.mark.timeout(size()["soak_s"] + 900)  # the soak's own length on top of pyproject's per-test bound
def test_soak_with_random_faults(pipeline, outcomes):
    run = size()
    p = pipeline().start()
    p.ready()
    rnd = random.Random(20261130)
    until = time.monotonic() + run["soak_s"]
    while True:
        wait = rnd.uniform(30, 60)
        if time.monotonic() + wait > until:
            break
        time.sleep(wait)
        name = rnd.choice(sorted(FAULTS))
        p.fault(name, lambda name=name: FAULTS[name](p))
    time.sleep(max(0.0, until - time.monotonic()))
    check(p.settle(Outcome(f"soak ({run['soak_s']} s, a random fault every 30-60 s)")), outcomes)


def _listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket the processes `pids` hold."""
    inodes = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append((inodes[fields[9]], _address(fields[1].split(":")[0], width)))
    return found


def _address(hex_ip: str, width: int) -> str:
    raw = bytes.fromhex(hex_ip)
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # /proc prints 32-bit words
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)


def test_security_no_superuser_no_leaked_password_loopback_only(pipeline, outcomes, stack, logs):
    p = pipeline().start()
    p.ready()
    local = stack.stack
    # the connector's role is not a superuser (it has REPLICATION and SELECT on its table only)
    with stack.producer_conn() as conn:
        superuser, replication = conn.execute("SELECT rolsuper, rolreplication FROM pg_roles "
                                              "WHERE rolname = 'ecst_connector'").fetchone()
    assert (superuser, replication) == (False, True)
    # every listener of the stack and of the consumer service is on loopback
    pids = {local.postgres.pid, local.kafka.pid, local.connect.pid, p.consumer.proc.pid}
    listeners = _listening({pid for pid in pids if pid})
    assert listeners and all(ipaddress.ip_address(a).is_loopback for _, a in listeners), listeners
    assert {pid for pid, _ in listeners} >= {local.postgres.pid, local.kafka.pid, local.connect.pid,
                                              p.consumer.proc.pid}
    # a filter that tries to escape into SQL of its own is refused, and the table is intact
    env = {"ECST_CONNECT_URL": p.stack.connect_url, "ECST_BOOTSTRAP_SERVERS": p.stack.bootstrap}
    for where in (f'1=1; COMMIT; DROP TABLE "{p.capture.table}"', "id > 0) OR (pg_sleep(30) IS NULL",
                  "1=1 -- comment"):
        refused = ecst("rebootstrap", "incremental", "--state-url", p.state_url, "--topic", p.capture.topic,
                       "--connector", p.capture.definition.name, "--where", where, env=env)
        with (logs / f"where-{p.capture.uid}.log").open("a") as log:
            log.write(refused.stdout + refused.stderr)
        assert refused.returncode == 1 and refused.stderr.startswith("Error: "), refused.stderr
    with stack.producer_conn() as conn:
        assert conn.execute(f'SELECT count(*) FROM "{p.capture.table}"').fetchone()[0] > 0
    p.fault("consumer kill -9", lambda: kill_consumer(p))
    outcome = p.settle(Outcome("security: roles, listeners, secrets, --where"))
    p.consumer.stop()
    # no password in anything the run produced: the suite's logs and CLI outputs, the stack's
    # logs (Postgres, Kafka, Connect, Maven)
    secrets = [local.postgres.admin_password, local.postgres.connector_password]
    produced = [f for f in logs.rglob("*") if f.is_file()]
    produced += [f for f in (local.home / "logs").rglob("*") if f.is_file()]
    produced.append(local.postgres.paths.log)
    leaks = [str(f) for f in produced if any(s.encode() in f.read_bytes() for s in secrets)]
    assert len(produced) >= 5 and leaks == [], leaks
    outcome.detail = (f"{len(listeners)} listeners, all loopback; {len(produced)} files searched for the "
                      "passwords, none found; the connector role is not a superuser; 3 `--where` "
                      "injection attempts refused, the table intact")
    check(outcome, outcomes)


def test_replication_slot_lost_and_recovered_by_the_runbook(pipeline, outcomes, logs):
    # docs/runbook.md, "Replication slot lost": the slot is dropped while the connector is
    # stopped and the producer keeps writing; the runbook's diagnosis, then `rebootstrap fresh`,
    # with the consumer service running throughout.
    p = pipeline().start()
    p.ready()
    name, slot = p.capture.definition.name, p.capture.definition.config["slot.name"]
    env = {"ECST_CONNECT_URL": p.stack.connect_url, "ECST_BOOTSTRAP_SERVERS": p.stack.bootstrap}

    def lose_the_slot():
        p.capture.client.stop(name)
        with p.stack.producer_conn() as conn:
            wait_until(lambda: conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                                            "pg_replication_slots WHERE slot_name = %s AND NOT active",
                                            (slot,)).fetchone(), 60, f"slot {slot} to be dropped")
        p.capture.client.resume(name)

    p.fault("replication slot dropped", lose_the_slot)
    status = wait_until(lambda: (r := ecst("connectors", "status", name, env=env)).stdout.count(
        "does not exist") and r, 120, "the lost slot in `connectors status`")
    fresh = ecst("rebootstrap", "fresh", "--state-url", p.state_url, "--topic", p.capture.topic,
                 "--group", f"svc-{p.capture.uid}", "--connector", name, env=env, timeout=600)
    (logs / f"slot-lost-{p.capture.uid}.log").write_text(status.stdout + fresh.stdout + fresh.stderr)
    assert "next: " in status.stdout and "ecst rebootstrap fresh" in status.stdout, status.stdout
    assert fresh.returncode == 0 and "fresh rebuild finished" in fresh.stdout, fresh.stdout + fresh.stderr
    check(p.settle(Outcome("replication slot lost, recovered by the runbook")), outcomes)


def test_change_topic_deleted_and_recovered_by_the_runbook(pipeline, outcomes, logs, stack):
    # docs/runbook.md, "Change topic deleted": someone deletes the topic while the connector and
    # the consumer service run; the runbook's `rebootstrap fresh` rebuilds it from a new snapshot.
    from ecst.demo import delete_topics

    p = pipeline().start()
    p.ready()
    name = p.capture.definition.name
    env = {"ECST_CONNECT_URL": p.stack.connect_url, "ECST_BOOTSTRAP_SERVERS": p.stack.bootstrap}
    p.fault("change topic deleted", lambda: delete_topics(stack.bootstrap, [p.capture.topic]))
    # writes go on meanwhile (Debezium cannot deliver them); the consumer says what happened
    log = logs / f"consumer-{p.capture.uid}-{p.consumer.starts}.log"
    wait_until(lambda: "no longer exists (deleted?)" in log.read_text(), 120,
               "the consumer to report the deleted topic")
    fresh = ecst("rebootstrap", "fresh", "--state-url", p.state_url, "--topic", p.capture.topic,
                 "--group", f"svc-{p.capture.uid}", "--connector", name, env=env, timeout=600)
    (logs / f"topic-deleted-{p.capture.uid}.log").write_text(fresh.stdout + fresh.stderr)
    assert fresh.returncode == 0 and "fresh rebuild finished" in fresh.stdout, fresh.stdout + fresh.stderr
    check(p.settle(Outcome("change topic deleted, recovered by the runbook")), outcomes)


def test_wal_growing_behind_a_stopped_connector(pipeline, outcomes, logs):
    # docs/runbook.md, "WAL growing": a stopped connector's slot pins WAL while the producer
    # writes; status and doctor show it; resuming the connector releases it.
    p = pipeline().start()
    p.ready()
    name = p.capture.definition.name
    env = {"ECST_CONNECT_URL": p.stack.connect_url}
    definition = write(logs / f"connector-{p.capture.uid}.yaml", p.capture.doc)

    def retained():
        out = ecst("connectors", "status", name, env=env).stdout
        if "retains " not in out:
            return None
        return int(out.split("retains ")[1].split(" bytes")[0].replace(",", ""))

    p.fault("connector stopped", lambda: p.capture.client.stop(name))
    first = wait_until(retained, 60, "the slot's retained WAL")
    grown = wait_until(lambda: (r := retained()) and r > first + 1_000_000 and r, 180,
                       "the stopped connector's slot to retain more WAL")
    doctor = ecst("connectors", "doctor", "-f", str(definition), "--max-retained-wal", str(first), env=env)
    (logs / f"wal-{p.capture.uid}.log").write_text(doctor.stdout + doctor.stderr)
    assert doctor.returncode == 1 and "is INACTIVE and retains" in doctor.stdout, doctor.stdout
    assert p.capture.client.status(name)["connector"]["state"] == "STOPPED"
    resumed = ecst("connectors", "resume", name, env=env)
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: (r := retained()) is not None and r < grown, 180, "the slot to release WAL")
    outcome = p.settle(Outcome("WAL growing behind a stopped connector"))
    outcome.detail = f"retained WAL grew from {first:,} to {grown:,} bytes while stopped, then shrank"
    check(outcome, outcomes)


def test_state_store_unavailable_while_the_consumer_runs(pipeline, outcomes, stack):
    # docs/runbook.md, "State store unavailable": the state database refuses connections for a
    # while (60 s at both sizes); the consumer service waits, not ready, and goes on by itself.
    db = f"state_{uuid.uuid4().hex[:10]}"
    url, drop = stack.new_database(db)
    p = pipeline(state_url=url)
    p.on_close(drop)
    p.start()
    p.ready()
    seen = {}
    status = p.http

    def outage():
        with stack.stack.postgres.connect("postgres") as admin:
            admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            try:
                seen["readyz"] = wait_until(lambda: (s := status("/readyz"))[0] == 503 and s, 60,
                                            "/readyz to say the state store is unavailable")
                seen["metric"] = "ecst_state_store_up 0" in status("/metrics")[1]
                time.sleep(size()["outage_s"])
                seen["alive"] = p.consumer.running() and status("/healthz")[0] == 200
            finally:
                admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')

    p.fault("state store unavailable", outage)
    outcome = p.settle(Outcome(f"state store unavailable for {size()['outage_s']} s"))
    outcomes.append(outcome)
    assert "state store unavailable" in seen["readyz"][1] and seen["metric"] and seen["alive"], seen
    check(outcome, [])

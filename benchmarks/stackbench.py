"""The local stack as the benchmarks use it: users tables of N rows, connectors with unique
names on them, and the consumer in a worker process whose CPU and memory are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from psycopg import sql

from ecst import kafka, source
from ecst.connectors import apply as apply_mod
from ecst.connectors.client import ConnectClient
from ecst.connectors.definition import ConnectorDefinition, parse_definition
from ecst.connectors.slots import wait_for_slot_inactive
from ecst.demo import delete_topics, remove_connector, topic_for
from ecst.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]


def uid() -> str:
    return uuid.uuid4().hex[:8]


def users_table(stack: LocalStack, rows: int) -> str:
    """A new producer table of `rows` users (ecst.source's generator); its name."""
    table = f"bench_{uid()}"
    with stack.postgres.connect() as conn:
        source.create_users_table(conn, table, rows)
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return table


def drop_table(stack: LocalStack, table: str) -> None:
    with stack.postgres.connect() as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
            sql.Identifier(table), sql.Identifier(f"{table}_signal")))


def update_all(stack: LocalStack, table: str, per_txn: int = 1000) -> int:
    """One update of every row, `per_txn` rows per transaction; the number of rows updated."""
    t = sql.Identifier(table)
    with stack.postgres.connect() as conn:
        found = conn.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(t)).fetchone()
        assert found is not None  # an aggregate always returns a row
        top = found[0]
        done = 0
        for start in range(1, top + 1, per_txn):
            cur = conn.execute(sql.SQL("UPDATE {} SET full_name = full_name || '+', "
                                       "balance = balance + 1 WHERE id BETWEEN %s AND %s").format(t),
                               (start, start + per_txn - 1))
            done += cur.rowcount
    return done


@dataclass
class Capture:
    """One Debezium connector (from connectors/users.yaml) on a producer table, with its own
    slot, publication and topics, so that captures never share anything."""

    stack: LocalStack
    table: str
    name: str = field(default_factory=lambda: f"bench-{uid()}")
    overrides: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        key = self.name.replace("-", "_")
        doc = yaml.safe_load((ROOT / "connectors" / "users.yaml").read_text())
        doc["name"] = self.name
        prefix = self.name.replace("-", "")
        doc["config"].update({
            "table.include.list": f"public.{self.table}", "slot.name": key, "publication.name": key,
            "topic.prefix": prefix, "signal.data.collection": f"public.{self.table}_signal",
            "signal.kafka.topic": f"{prefix}.signals",
            "signal.kafka.bootstrap.servers": self.stack.kafka.bootstrap,
            "notification.sink.topic.name": f"{prefix}.notifications", **self.overrides})
        self.definition: ConnectorDefinition = parse_definition(doc, environ={})
        self.client = ConnectClient(self.stack.connect.url)
        self.slot = key

    @property
    def topic(self) -> str:
        return topic_for(self.definition)

    @property
    def topics(self) -> list[str]:
        prefix = self.definition.config["topic.prefix"]
        return [self.topic, f"{prefix}.signals", f"{prefix}.notifications",
                f"__debezium-heartbeat.{prefix}"]

    def apply(self) -> float:
        """Create the publication and the connector; the wall-clock time of the request."""
        with self.stack.postgres.connect() as conn:
            source.prepare_capture(conn, self.table, self.slot, signal_table=f"{self.table}_signal")
        applied = time.time()
        apply_mod.apply(self.client, self.definition)
        return applied

    def records(self) -> int:
        """Records in the change topic now (0 while it does not exist)."""
        try:
            beginnings, ends = kafka.topic_offsets(self.stack.kafka.bootstrap, [self.topic])
        except Exception:  # noqa: BLE001 - not created yet
            return 0
        return sum(ends.values()) - sum(beginnings.values())

    def wait_records(self, n: int, timeout_s: float = 900.0) -> float:
        """Wait until the change topic holds `n` records; the wall-clock time it did."""
        deadline = time.monotonic() + timeout_s
        while self.records() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic} holds {self.records()} records after {timeout_s:.0f} s, "
                                   f"expected {n}")
            time.sleep(0.05)
        return time.time()

    def stop(self) -> None:
        """Delete the connector, its slot and publication; its topics stay."""
        remove_connector(self.client, self.name)
        with self.stack.postgres.connect() as conn:
            wait_for_slot_inactive(conn, self.slot)
            source.drop_capture(conn, self.slot, self.slot)

    def remove(self) -> None:
        """Delete the connector, its slot, publication and topics."""
        self.stop()
        delete_topics(self.stack.kafka.bootstrap, self.topics)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a live process so far, all its threads (/proc/<pid>/stat);
    None when unknown."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": fields[0] is the state
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ConsumerProcess:
    """`benchmarks/consume_worker.py` in its own process: the consumer's CPU time and peak RSS
    are then its own. `result()` waits for it and returns its JSON report."""

    def __init__(self, stack: LocalStack, topic: str, state_url: str, *, until: str = "caught-up",
                 batch_size: int = 2000, kafka_client: str = "kafka-python",
                 extra: list[str] | None = None) -> None:
        cmd = [sys.executable, "-m", "benchmarks.consume_worker", "--bootstrap", stack.kafka.bootstrap,
               "--topic", topic, "--state", state_url, "--group", f"bench-{uid()}", "--until", until,
               "--batch-size", str(batch_size), "--kafka-client", kafka_client, *(extra or [])]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "started":
            self.proc.wait()
            raise RuntimeError(f"the consumer worker failed to start (exit {self.proc.returncode})")

    def result(self, timeout_s: float = 1800.0) -> dict[str, float]:
        assert self.proc.stdout is not None
        out, _ = self.proc.communicate(timeout=timeout_s)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the consumer worker failed (exit {self.proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])

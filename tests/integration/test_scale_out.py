"""Scale-out, for real (issue 13): three `ecst consume` processes in one group share a 6-partition
topic and one PostgreSQL state database; one is killed with SIGKILL mid-stream, a fourth joins
later, and the state ends exactly equal to the source, every column of every row.

Writers run before the connector is applied and all along: short transactions from several
threads, and transactions held open for a while, so that some span the snapshot. Each process logs
(`-v`) the partitions it is assigned and the batches it applies: the test reads those logs to show
that the partitions were really spread, and that the killed process's partitions were taken over.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ecst import kafka
from ecst.connectors.definition import parse_definition
from ecst.consumer.snapshots import SNAPSHOT_COMPLETE
from ecst.consumer.store import StateStore
from ecst.demo import topic_for
from tests.faults.harness import SteadyWriter
from tests.integration.conftest import Capture

PARTITIONS = 6
ROWS = 5000
BATCH = 250
ASSIGNED = re.compile(r"partitions assigned: (.*)$")
APPLIED = re.compile(r"applied batch: (\d+) records")


@pytest.fixture
def wide_capture(stack):
    """A captured table whose connector creates its change topic with 6 partitions."""
    c = Capture(stack, uuid.uuid4().hex[:10])
    c.doc["config"]["topic.creation.default.partitions"] = PARTITIONS
    c.definition = parse_definition(c.doc, environ={})
    c.topic = topic_for(c.definition)
    yield c
    c.close()


class Process:
    """One `ecst -v consume` process of the group, its output in a log file."""

    def __init__(self, name: str, capture: Capture, state_url: str, group: str, logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        with open(self.log, "w") as out:
            # --group-instance-id "": a dynamic member, as the Deployment in deploy/k8s runs them
            # (on one host they would otherwise share the default <hostname>-<group> id)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ecst", "-v", "consume", "--state-url", state_url,
                 "--topic", capture.topic, "--bootstrap-servers", capture.stack.bootstrap,
                 "--group", group, "--group-instance-id", "", "--batch-size", str(BATCH)],
                stdout=out, stderr=subprocess.STDOUT, text=True)

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def assignments(self) -> list[set[int]]:
        """Every assignment it logged, as the set of partition numbers."""
        out = []
        for line in self.lines():
            m = ASSIGNED.search(line)
            if m:
                out.append({int(p) for p in re.findall(r"\[(\d+)\]@", m.group(1))})
        return out

    def batches(self) -> int:
        """Batches it applied."""
        return sum(1 for line in self.lines() if APPLIED.search(line))

    def applied(self) -> int:
        """Records in the batches it applied (committed with their offsets)."""
        return sum(int(m.group(1)) for line in self.lines() if (m := APPLIED.search(line)))

    def alive(self) -> None:
        assert self.proc.poll() is None, f"{self.name} exited ({self.proc.returncode}):\n" + \
            "\n".join(self.lines()[-40:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class SpanningWriter(threading.Thread):
    """Transactions held open for 0.5-2 s: updates, inserts and deletes written early and committed
    late, so that some are open while the slot is created and the snapshot is read."""

    def __init__(self, connect, table: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.connect, self.table = connect, table
        self.rnd = random.Random(seed)
        self.done = threading.Event()
        self.commits = 0

    def run(self) -> None:
        t = sql.Identifier(self.table)
        conn = self.connect()
        try:
            while not self.done.is_set():
                try:
                    with conn.transaction():
                        ids = [r[0] for r in conn.execute(
                            sql.SQL("SELECT id FROM {} TABLESAMPLE SYSTEM (5) LIMIT 12").format(t))]
                        for uid in ids[:8]:
                            conn.execute(sql.SQL("UPDATE {} SET country = %s, balance = balance - 1, "
                                                 "updated_at = now() WHERE id = %s").format(t),
                                         (self.rnd.choice(["FR", "IT", None]), uid))
                        self.done.wait(self.rnd.uniform(0.5, 2.0))
                        conn.execute(sql.SQL(
                            "INSERT INTO {} (email, full_name, country, balance, last_login) "
                            "VALUES (%s, %s, NULL, %s, NULL)").format(t),
                            (f"span{self.rnd.randrange(10**9)}@example.com", "Spanning writer", "1.00"))
                        for uid in ids[8:10]:
                            conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (uid,))
                    self.commits += 1
                except psycopg.errors.TransactionRollback:  # a deadlock with another writer
                    pass  # rolled back: the source decides what the state must hold
        finally:
            conn.close()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=60)


def spread(assignments: list[set[int]]) -> bool:
    """Each member holds partitions, no two the same one, and together all of them."""
    held = [p for a in assignments for p in a]
    return all(assignments) and len(held) == len(set(held)) == PARTITIONS


def wait_until(condition, timeout_s: float, what: str, processes=(), every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        for p in processes:
            p.alive()
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(every_s)


def test_three_processes_one_killed_one_added_end_exactly_equal_to_the_source(wide_capture, stack,
                                                                               tmp_path):
    capture = wide_capture
    capture.create(rows=ROWS)
    url, drop = stack.new_database(f"state_{capture.uid}")
    group = f"scale-{capture.uid}"
    topic = capture.topic
    started = time.monotonic()
    writers = [SteadyWriter(stack.producer_conn, capture.table, rate=15, seed=s) for s in (1, 2, 3)]
    spanning = [SpanningWriter(stack.producer_conn, capture.table, seed=s) for s in (4, 5)]
    processes: list[Process] = []
    store = None
    try:
        try:
            for w in (*writers, *spanning):
                w.start()  # writing before the connector exists, and all along
            time.sleep(1)
            processes = [Process(f"consumer-{i}", capture, url, group, tmp_path) for i in range(3)]
            capture.apply()

            # every process got partitions of its own, and together they hold all six
            wait_until(lambda: spread([p.assignments()[-1] if p.assignments() else set() for p in processes]),
                       120, "the first assignment of the three processes", processes)
            first = {p.name: p.assignments()[-1] for p in processes}
            print("first assignment:", first)

            # SIGKILL one mid-stream: once it has applied two batches of its partitions
            victim = processes[1]
            wait_until(lambda: victim.batches() >= 2, 120, "the victim's first batches", processes)
            with contextlib.closing(StateStore(url)) as probe:
                snapshot = probe.snapshot_states().get(topic)
            streaming = snapshot is not None and snapshot.state == SNAPSHOT_COMPLETE
            phase = "streaming" if streaming else "snapshot"
            logged = {p.name: len(p.assignments()) for p in processes}  # assignments before the kill
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(timeout=30)
            assert victim.proc.returncode == -signal.SIGKILL
            held = victim.assignments()[-1]
            print(f"killed {victim.name} in the {phase} after {victim.applied()} records, "
                  f"{time.monotonic() - started:.0f} s in; it held partitions {sorted(held)}")
            survivors = [p for p in processes if p is not victim]

            # a fourth process joins later; the group hands out the dead member's partitions once
            # its session times out (45 s)
            time.sleep(3)
            fourth = Process("consumer-3", capture, url, group, tmp_path)
            processes.append(fourth)
            survivors.append(fourth)
            wait_until(lambda: fourth.assignments() and fourth.assignments()[-1], 150,
                       "an assignment of the fourth process", survivors, every_s=1)
            print(f"the fourth process was assigned {sorted(fourth.assignments()[-1])} "
                  f"{time.monotonic() - started:.0f} s in")
            wait_until(lambda: fourth.applied() > 0, 60, "a batch of the fourth process", survivors)
            time.sleep(3)  # writes go on under the new assignment
        finally:
            for w in (*writers, *spanning):
                w.stop()
        print("writer commits:", [w.commits for w in writers], "spanning:", [w.commits for w in spanning],
              "writer errors:", [w.errors for w in writers])

        # the survivors catch up: every partition's stored offset reaches the end of the topic, and
        # the state equals the source, every column of every row, NULLs included
        store = StateStore(url)
        outcome = {}

        def caught_up():
            _, ends = kafka.topic_offsets(stack.bootstrap, [topic])
            outcome["ends"], outcome["stored"] = ends, store.stored_offsets()
            if outcome["stored"] != ends:
                return False
            outcome["result"] = capture.compare(store)
            return outcome["result"].matches

        with contextlib.suppress(AssertionError):
            wait_until(caught_up, 120, "the state to equal the source", survivors, every_s=2)
        assert len(outcome["ends"]) == PARTITIONS
        assert outcome["stored"] == outcome["ends"]
        result = outcome["result"]
        assert result.matches, result.summary()
        print(result.summary(), f"{time.monotonic() - started:.0f} s in")

        # the partitions were spread, and the dead member's were taken over by the others
        final = {p.name: sorted(p.assignments()[-1]) for p in survivors}
        print("final assignment:", final, "records applied:", {p.name: p.applied() for p in processes})
        assert spread(list(first.values()))
        assert spread([p.assignments()[-1] for p in survivors])
        assert all(p.applied() > 0 for p in processes)
        for partition in held:  # taken over after the kill
            assert any(partition in a for p in survivors for a in p.assignments()[logged.get(p.name, 0):]), \
                partition
        assert store.snapshot_states()[topic].state == SNAPSHOT_COMPLETE
    finally:
        for p in processes:
            p.stop()
        if store is not None:
            store.close()
        drop()
    print(f"test took {time.monotonic() - started:.0f} s")

"""The fault suite's harness: a pipeline on the real local stack under a steady writer, the
faults the suite injects, a prober that measures commit-to-applied lag from the outside, and the
checker that compares every column of every row once the faults are over.

Nothing here is mocked: the writer writes to the producer's Postgres, Debezium streams to Kafka,
`ecst consume` runs as a service process with its own log, and faults are real signals and
restarts of the local stack's processes (loopback only).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from ecst.consumer.store import StateStore, normalize_url
from ecst.stack import process
from tests.integration.cli import free_port, http_get

PROBE_ID = 1  # the probe row: only the prober writes it; the writer leaves it alone
SIZES = {
    # rows before the connector, writer transactions/s, soak seconds, state outage seconds
    "ci": {"rows": 3000, "rate": 40, "soak_s": 150, "outage_s": 60},
    "full": {"rows": 20000, "rate": 80, "soak_s": 600, "outage_s": 60},
}


def size() -> dict:
    """The run's size: ECST_FAULTS_SIZE=ci (the default, what `.ci/run` runs) or full."""
    name = os.environ.get("ECST_FAULTS_SIZE", "ci")
    if name not in SIZES:
        raise ValueError(f"ECST_FAULTS_SIZE={name!r}: expected one of {', '.join(SIZES)}")
    return {"name": name, **SIZES[name]}


def wait_until(condition, timeout_s: float, what: str, every_s: float = 0.5):
    """Poll `condition()` until it returns a true value (which is returned)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


class SteadyWriter(threading.Thread):
    """Short transactions of 1-3 inserts, updates or deletes of users at `rate` per second, for as
    long as it runs. A producer outage makes it reconnect and go on (a transaction whose commit
    was cut off may or may not have happened: the checker compares with the source, not with
    what the writer meant)."""

    def __init__(self, connect, table: str, rate: float, seed: int = 1) -> None:
        super().__init__(daemon=True)
        self.connect, self.table, self.rate = connect, table, rate
        self.rnd = random.Random(seed)
        self.done = threading.Event()
        self.commits = self.errors = 0

    def run(self) -> None:
        t = sql.Identifier(self.table)
        conn = None
        ids: list[int] = []
        pause = 1.0 / self.rate
        while not self.done.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = self.connect()
                    ids = [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} WHERE id <> %s").format(t),
                                                      (PROBE_ID,))]
                with conn.transaction():
                    for _ in range(self.rnd.randint(1, 3)):
                        self._change(conn, t, ids)
                self.commits += 1
            except psycopg.Error:
                self.errors += 1
                with contextlib.suppress(psycopg.Error):
                    if conn is not None:
                        conn.close()
                conn = None
                time.sleep(0.5)
            time.sleep(max(0.0, pause - (time.monotonic() - started)))
        if conn is not None:
            conn.close()

    def _change(self, conn: psycopg.Connection, t: sql.Identifier, ids: list[int]) -> None:
        op = self.rnd.choices("iud", weights=(2, 6, 1))[0]
        if op == "i" or len(ids) < 10:
            n = self.rnd.randrange(10**9)
            new = conn.execute(sql.SQL(
                "INSERT INTO {} (email, full_name, country, balance, birth_date, last_login) "
                "VALUES (%s, %s, %s, %s, %s, now()) RETURNING id").format(t),
                (f"w{n}@example.com", f"Writer {n}", self.rnd.choice(["DE", "NL", None]),
                 f"{self.rnd.randint(0, 99999)}.{self.rnd.randint(0, 99):02d}", None)).fetchone()[0]
            ids.append(new)
        elif op == "u":
            conn.execute(sql.SQL("UPDATE {} SET full_name = full_name || '*', balance = balance + 1, "
                                 "active = NOT active, updated_at = now() WHERE id = %s").format(t),
                         (self.rnd.choice(ids),))
        else:
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(t),
                         (ids.pop(self.rnd.randrange(len(ids))),))

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=60)


class Prober(threading.Thread):
    """Once a second, writes the time into the probe row of the source and reads the probe row
    of the state: the state's value tells how far behind the pipeline is (commit to applied),
    and the first value newer than a fault tells when the pipeline recovered from it."""

    def __init__(self, connect, table: str, state_url: str) -> None:
        super().__init__(daemon=True)
        self.connect, self.table = connect, table
        self.engine = create_engine(normalize_url(state_url))
        self.done = threading.Event()
        self.samples: list[tuple[float, float | None]] = []  # (when, probe time seen in the state)

    def run(self) -> None:
        conn = None
        query = text(f'SELECT full_name FROM "{self.table}" WHERE id = :id')
        while not self.done.is_set():
            now = time.time()
            try:
                if conn is None:
                    conn = self.connect()
                conn.execute(sql.SQL("UPDATE {} SET full_name = %s WHERE id = %s").format(
                    sql.Identifier(self.table)), (f"probe:{now:.3f}", PROBE_ID))
            except psycopg.Error:
                with contextlib.suppress(psycopg.Error):
                    if conn is not None:
                        conn.close()
                conn = None
            seen = None
            try:
                with self.engine.connect() as state:
                    value = state.execute(query, {"id": PROBE_ID}).scalar()
                if value and value.startswith("probe:"):
                    seen = float(value.split(":", 1)[1])
            except SQLAlchemyError:
                pass  # the state is unavailable or not created yet: no sample
            self.samples.append((time.time(), seen))
            self.done.wait(1.0)
        if conn is not None:
            conn.close()
        self.engine.dispose()

    def max_lag(self, since: float = 0.0) -> float:
        """The largest commit-to-applied delay seen (seconds), from `since` on."""
        lags = [when - seen for when, seen in self.samples if seen is not None and when >= since]
        return round(max(lags, default=0.0), 1)

    def recovered_at(self, fault_time: float) -> float | None:
        """When the state first held a probe written after `fault_time`."""
        for when, seen in self.samples:
            if seen is not None and seen > fault_time:
                return when
        return None

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


class ConsumerService:
    """`ecst consume` as a service process: its output goes to a log file of the run."""

    def __init__(self, capture, state_url: str, logs: Path, *extra: str) -> None:
        self.capture, self.state_url, self.logs, self.extra = capture, state_url, logs, extra
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.logs / f"consumer-{self.capture.uid}-{self.starts}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecst", "-v", "consume", "--state-url", self.state_url,
             "--topic", self.capture.topic, "--bootstrap-servers", self.capture.stack.bootstrap,
             "--group", f"svc-{self.capture.uid}", "--http-port", str(self.port), *self.extra],
            stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the consumer is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return None if self.proc is None else self.proc.returncode


@dataclass
class Outcome:
    """One scenario's figures, as `docs/reliability.json` records them."""

    scenario: str
    faults_injected: int = 0
    recovered: int = 0
    rows_compared: int = 0
    mismatches: int = 0
    poison_injected: int = 0
    dead_lettered: int = 0
    max_lag_s: float = 0.0
    recovery_s: float | None = None  # the slowest recovery from one fault
    duration_s: float = 0.0
    writes: int = 0
    faults: list[str] = field(default_factory=list)
    detail: str = ""


class Pipeline:
    """A producer table with a steady writer, its connector, a consumer service and a prober.
    The writer starts before the connector, so the slot is created under writes."""

    def __init__(self, capture, state_url: str, logs: Path, *consumer_args: str) -> None:
        self.capture, self.state_url, self.logs = capture, state_url, logs
        self.stack = capture.stack
        self.size = size()
        self.writer = SteadyWriter(self.stack.producer_conn, capture.table, self.size["rate"])
        self.prober = Prober(self.stack.producer_conn, capture.table, state_url)
        self.consumer = ConsumerService(capture, state_url, logs, *consumer_args)
        self.faults: list[tuple[str, float]] = []
        self.started = time.time()
        self.cleanups: list = []  # run after the pipeline and its capture are closed

    def on_close(self, cleanup) -> None:
        self.cleanups.append(cleanup)

    def start(self, rows: int | None = None) -> Pipeline:
        self.capture.create(rows=rows or self.size["rows"])
        self.writer.start()
        time.sleep(1)  # writes in flight before the slot exists
        self.capture.apply()
        self.consumer.start()
        self.prober.start()
        return self

    def http(self, path: str) -> tuple[int | None, str]:
        """(status, body) of the consumer service's endpoint `path`."""
        return http_get(f"http://127.0.0.1:{self.consumer.port}{path}")

    def ready(self, timeout_s: float = 180) -> None:
        """Until the consumer service reports ready (snapshot applied)."""
        wait_until(lambda: self.http("/readyz")[0] == 200, timeout_s, "the consumer service to be ready")

    def fault(self, name: str, action) -> None:
        """Inject a fault (and its repair, which `action` includes); the pipeline must then
        carry a change committed after it into the state."""
        self.faults.append((name, time.time()))
        action()

    def settle(self, outcome: Outcome, timeout_s: float = 180) -> Outcome:
        """Stop the writer, wait for every fault's recovery and for the state to equal the
        source on every column of every row, and fill in the figures."""

        last_fault = max((t for _, t in self.faults), default=self.started)

        def recovered():
            assert self.consumer.running(), self._died()
            return self.prober.recovered_at(last_fault)

        wait_until(recovered, timeout_s, "a change committed after the last fault to reach the state")
        self.writer.stop()
        self.prober.stop()
        store = StateStore(self.state_url)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                result = self.capture.compare(store)
                if result.matches or time.monotonic() > deadline:
                    break
                time.sleep(2)
        finally:
            store.close()
        recoveries = [self.prober.recovered_at(t) - t for _, t in self.faults
                      if self.prober.recovered_at(t) is not None]
        outcome.faults_injected = len(self.faults)
        outcome.faults = [name for name, _ in self.faults]
        outcome.recovered = len(recoveries)
        outcome.rows_compared = result.source_rows
        outcome.mismatches = len(result.missing) + len(result.extra) + len(
            {k for k, *_ in result.differing})
        outcome.max_lag_s = self.prober.max_lag()
        outcome.recovery_s = round(max(recoveries), 1) if recoveries else None
        outcome.duration_s = round(time.time() - self.started, 1)
        outcome.writes = self.writer.commits
        if not result.matches:
            outcome.detail = result.summary()
        return outcome

    def _died(self) -> str:
        log = self.logs / f"consumer-{self.capture.uid}-{self.consumer.starts}.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return f"the consumer service died (exit {self.consumer.proc.returncode}): " + " | ".join(lines[-3:])

    def close(self) -> None:
        self.writer.stop()
        self.prober.stop()
        self.consumer.stop()


# -- faults on the local stack ------------------------------------------------------------------

def kill_consumer(p: Pipeline, pause_s: float = 1.0) -> None:
    p.consumer.kill9()
    time.sleep(pause_s)
    p.consumer.start()


def _gone(pid: int, ports: tuple[int, ...], what: str) -> None:
    """Until process `pid` is gone and its listening ports are free again."""
    wait_until(lambda: not process.alive(pid) and not any(process.port_in_use(p) for p in ports), 60,
               f"{what} to be gone")


def kill_connect(p: Pipeline, restart: bool = True) -> None:
    worker = p.stack.stack.connect
    pid = worker.pid
    os.kill(pid, signal.SIGKILL)
    _gone(pid, (worker.port,), "Connect")
    if restart:
        worker.start()


def kill_broker(p: Pipeline, down_s: float = 10.0) -> None:
    """kill -9 of the broker, which stays down `down_s` (clients meet refused connections), then
    starts again."""
    broker = p.stack.stack.kafka
    pid = broker.pid
    os.kill(pid, signal.SIGKILL)
    _gone(pid, (broker.port, broker.controller_port), "the broker")
    time.sleep(down_s)
    broker.start()


def restart_postgres(p: Pipeline, mode: str) -> None:
    """`fast` (SIGINT: sessions are closed, a shutdown checkpoint) or `immediate` (SIGQUIT: no
    checkpoint, crash recovery at start), then start again."""
    cluster = p.stack.stack.postgres
    pid = cluster.pid
    os.kill(pid, signal.SIGINT if mode == "fast" else signal.SIGQUIT)
    _gone(pid, (cluster.port,), f"PostgreSQL ({mode} shutdown)")
    cluster.start()
    p.capture.conn.close()  # the suite's own session was cut too
    p.capture.conn = p.stack.producer_conn()


def terminate_walsender(p: Pipeline) -> None:
    slot = p.capture.definition.config["slot.name"]
    with p.stack.producer_conn() as conn:
        killed = wait_until(lambda: conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,)).fetchone(),
            60, f"slot {slot} to be streaming")
    assert killed[0], "the walsender was not terminated"


FAULTS = {
    "consumer kill -9": kill_consumer,
    "Connect kill -9": kill_connect,
    "broker kill -9": kill_broker,
    "Postgres fast restart": lambda p: restart_postgres(p, "fast"),
    "Postgres immediate restart": lambda p: restart_postgres(p, "immediate"),
    "walsender terminated": terminate_walsender,
}


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None

"""Benchmark scenarios on the local stack: ecst next to Debezium's JDBC sink connector.

Plain functions that return dicts of figures, called by the harness (benchmarks/harness.py):

- `sink_apply(stack, topic, rows_expected, source_table=...)`: the JDBC sink connector copies a
  topic (the harness's pre-filled one) into a new table of the `bench_sink` database; wall time,
  rows/s, Connect worker CPU, and the table compared with the source, every column of every row.
- `stream_latency(stack, rate, seconds, side)`: per-change latency, producer commit to applied row,
  for side "ecst" or "sink", with a writer issuing `rate` updates per second.

`stack` is an `ecst.stack.LocalStack` that is up (or the integration tests' local backend).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from benchmarks.stackbench import Capture, cpu_seconds, drop_table, users_table
from ecst import kafka, verify
from ecst.connectors import apply as apply_mod
from ecst.connectors.client import ConnectClient
from ecst.connectors.definition import parse_definition
from ecst.stack import LocalStack
from ecst.stack.postgres import ADMIN_USER, CONNECTOR_ROLE

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SINK_CLASS = "io.debezium.connector.jdbc.JdbcSinkConnector"
SINK_DB = "bench_sink"  # the JDBC sink's target database, in the stack's Postgres cluster
# Records per batch on both sides: ecst's --batch-size, the sink's batch.size and its consumer's
# max.poll.records (Connect's default 500 would make the sink write batches of at most 500).
BATCH = 2000
POLL_S = 0.2  # how often the target table is polled for its final state


# ----- the stack ---------------------------------------------------------------------------------
def _local(stack: Any) -> LocalStack:
    """A LocalStack, or the integration tests' local backend holding one."""
    inner = stack if isinstance(stack, LocalStack) else getattr(stack, "stack", None)
    if not isinstance(inner, LocalStack):
        raise TypeError(f"expected an ecst.stack.LocalStack (the local stack), got {type(stack).__name__}")
    return inner


def _ensure_database(st: LocalStack, name: str, writer_role: str | None = None) -> None:
    """Create database `name` unless it exists; `writer_role` may create tables in its schema."""
    with st.postgres.connect("postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if writer_role:
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(name), sql.Identifier(writer_role)))
    if writer_role:
        with st.postgres.connect(name) as conn:
            conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(
                sql.Identifier(writer_role)))


def _drop_database(st: LocalStack, name: str) -> None:
    with st.postgres.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _state_url(st: LocalStack, db: str) -> str:
    pw = st.postgres.admin_password
    return f"postgresql://{ADMIN_USER}:{pw}@127.0.0.1:{st.settings.pg_port}/{db}"


def _error_name(error: Any) -> str:
    if error is None:
        return "NoError"
    return error if isinstance(error, str) else getattr(error, "__name__", type(error).__name__)


def _delete_group(st: LocalStack, group: str, timeout_s: float = 15.0) -> None:
    """Delete a consumer group, once its members have left (best effort: a leftover is harmless)."""
    admin = kafka.admin(st.kafka.bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                result = admin.delete_groups([group])  # {group: error name} (or (group, error) pairs)
                errors = [_error_name(e) for _, e in (result.items() if isinstance(result, dict) else result)]
            except Exception as exc:  # noqa: BLE001 - retried, then given up
                errors = [type(exc).__name__]
            if set(errors) <= {"NoError", "GroupIdNotFoundError"} or time.monotonic() > deadline:
                return
            time.sleep(0.5)
    finally:
        admin.close()


def _has_plugin(st: LocalStack, cls: str) -> bool:
    plugins = ConnectClient(st.connect.url).request("GET", "/connector-plugins")
    return any(p.get("class") == cls for p in plugins)


# ----- target tables -----------------------------------------------------------------------------
FINGERPRINT = "SELECT count(*), coalesce(sum(balance), 0), coalesce(sum(length(full_name)), 0) FROM {}"


def _fingerprint(conn: psycopg.Connection, table: str) -> tuple[Any, ...] | None:
    """(rows, sum of balance, sum of name lengths): in prefill's history each update raises both
    sums of its row, so a target shows the source's fingerprint only once it holds every row's
    final version. None while the table does not exist."""
    try:
        row = conn.execute(sql.SQL(FINGERPRINT).format(sql.Identifier(table))).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return tuple(row) if row else None


def table_rows(conn: psycopg.Connection, table: str) -> list[dict[str, Any]]:
    """Every row of `table`, as psycopg reads it."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        return cur.fetchall()


def _wait_final(target: psycopg.Connection, table: str, expected: tuple[Any, ...] | None, rows: int,
                timeout_s: float, alive: Callable[[], None]) -> tuple[float, float]:
    """Poll until the target's fingerprint equals `expected` (or, without one, it holds `rows`
    rows); (first row seen, final state seen) as perf_counter times. `alive()` every 2 s."""
    deadline = time.monotonic() + timeout_s
    checked = 0.0
    first = None
    while True:
        if time.monotonic() - checked > 2:
            alive()
            checked = time.monotonic()
        fp = _fingerprint(target, table)
        now = time.perf_counter()
        if first is None and fp is not None and fp[0] > 0:
            first = now
        if fp is not None and (fp == expected if expected is not None else fp[0] >= rows):
            return first or now, now
        if time.monotonic() > deadline:
            raise TimeoutError(f"{table}: fingerprint {fp}, expected {expected or rows} after {timeout_s} s")
        time.sleep(POLL_S)


def _compare(st: LocalStack, source_table: str, target: psycopg.Connection, table: str) -> verify.Comparison:
    with st.postgres.connect() as src:
        key = verify.primary_key(src, source_table)
        return verify.compare_rows(verify.source_rows(src, source_table), table_rows(target, table), key)


# ----- the JDBC sink connector -------------------------------------------------------------------
def sink_config(topic: str, table: str, *, batch_size: int = BATCH, unnest: bool = False,
                database: str = SINK_DB) -> dict[str, str]:
    """The JDBC sink's config: the topic into `table` of `database`, as ecst applies it.

    - upsert by the record key (`primary.key.mode=record_key`), deletes applied (`delete.enabled`,
      which needs the record key), the table created and extended from the records' schemas
      (`schema.evolution=basic`);
    - the JSON converter with the schema embedded, as connectors/users.yaml writes the topic;
    - `batch.size` and the task consumer's `max.poll.records` both `batch_size` (ecst's batch):
      Connect's default of 500 records per poll would cap the sink's batches at 500;
    - `auto.offset.reset=earliest`: a new group reads the topic from its start (the worker allows
      client overrides: `connector.client.config.override.policy=All`);
    - one task, as ecst runs one consumer; the connector role's credentials come from the worker's
      environment (`${env:...}`), never through the REST API;
    - `unnest`: `dialect.postgres.unnest.insert.enabled`, one INSERT ... SELECT unnest(arrays)
      statement per batch instead of a JDBC batch of single-row statements (off by default).
    """
    return {
        "connector.class": SINK_CLASS,
        "tasks.max": "1",
        "topics": topic,
        "connection.url": f"jdbc:postgresql://${{env:ECST_PGHOST}}:${{env:ECST_PGPORT}}/{database}",
        "connection.username": "${env:ECST_CONNECTOR_USER}",
        "connection.password": "${env:ECST_CONNECTOR_PASSWORD}",
        "insert.mode": "upsert",
        "primary.key.mode": "record_key",
        "delete.enabled": "true",
        "schema.evolution": "basic",
        "collection.name.format": table,
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "batch.size": str(batch_size),
        "consumer.override.max.poll.records": str(batch_size),
        "consumer.override.auto.offset.reset": "earliest",
        "dialect.postgres.unnest.insert.enabled": "true" if unnest else "false",
    }


@contextmanager
def sink_connector(stack: Any, topic: str, table: str,
                   **options: Any) -> Iterator[tuple[str, Callable[[], None]]]:
    """A JDBC sink connector on `topic` into `table` of `bench_sink` (`sink_config`, `options`
    passed to it), created on entry, once it runs; on exit
    the connector, its consumer group and the table are removed. Yields (name, alive): `alive()`
    raises when the connector or its task FAILED."""
    st = _local(stack)
    if not _has_plugin(st, SINK_CLASS):
        raise RuntimeError(f"the Connect worker at {st.connect.url} has no {SINK_CLASS}: restart the stack "
                           "(`ecst stack down && ecst stack up`) to resolve the jars of deploy/maven/jdbc")
    _ensure_database(st, SINK_DB, CONNECTOR_ROLE)
    client = ConnectClient(st.connect.url)
    name = f"sink-{uuid.uuid4().hex[:8]}"
    definition = parse_definition({"name": name, "config": sink_config(topic, table, **options)}, environ={})

    def alive() -> None:
        status = client.status(name) or {}
        for t in [status.get("connector", {}), *status.get("tasks", [])]:
            if t.get("state") == "FAILED":
                raise RuntimeError(f"JDBC sink {name} FAILED: {str(t.get('trace'))[:2000]}")

    try:
        apply_mod.apply(client, definition)
        yield name, alive
    finally:
        with suppress(Exception):
            client.delete(name)
        _delete_group(st, f"connect-{name}")
        with st.postgres.connect(SINK_DB) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def sink_apply(stack: Any, topic: str, rows_expected: int, *, source_table: str | None = None,
               batch_size: int = BATCH, unnest: bool = False, timeout_s: float = 900.0) -> dict[str, Any]:
    """The JDBC sink connector copies `topic` into a new table of database `bench_sink`.

    Measured from the connector's creation (PUT of its config) until the table holds the final
    state: with `source_table` (prefill's), when its fingerprint (rows, sum(balance),
    sum(length(full_name))) equals the source table's, then every column of every row is compared
    with it (`matches`); without, when it holds `rows_expected` rows. The table is polled every
    0.2 s. `worker_cpu_s`: utime+stime of the Connect worker JVM over the same span (the whole
    worker: other connectors on it count too, prefill's is removed). The connector, its group and
    the table are removed afterwards."""
    st = _local(stack)
    table = f"sink_{uuid.uuid4().hex[:8]}"
    expected = None
    if source_table:
        with st.postgres.connect() as src:
            expected = _fingerprint(src, source_table)
    _ensure_database(st, SINK_DB, CONNECTOR_ROLE)
    with st.postgres.connect(SINK_DB) as target:
        pid = st.connect.pid
        cpu0 = cpu_seconds(pid)
        started = time.perf_counter()
        with sink_connector(st, topic, table, batch_size=batch_size, unnest=unnest) as (name, alive):
            first, done = _wait_final(target, table, expected, rows_expected, timeout_s, alive)
            cpu1 = cpu_seconds(pid)
            took = done - started
            result: dict[str, Any] = {
                "side": "sink", "connector": name, "topic": topic, "rows": rows_expected,
                "records": sum(kafka.topic_offsets(st.kafka.bootstrap, [topic])[1].values()),
                "wall_s": round(took, 3), "rows_per_s": round(rows_expected / took, 1),
                "first_row_s": round(first - started, 3),
                "worker_cpu_s": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None,
                "batch_size": batch_size, "unnest": unnest,
            }
            result["records_per_s"] = round(result["records"] / took, 1)
            # from the first row seen: the rate once started (start-up, e.g. Hibernate's, excluded)
            result["records_per_s_after_first_row"] = round(result["records"] / (done - first), 1) \
                if done > first else None
            if source_table:
                cmp = _compare(st, source_table, target, table)
                result.update(matches=cmp.matches, comparison=cmp.summary())
    log.info("sink_apply: %s", result)
    return result


# ----- the ecst consumer, as its own process -----------------------------------------------------
@contextmanager
def _ecst_consumer(st: LocalStack, topic: str, state_db: str, batch_size: int = BATCH,
                   kafka_client: str = "kafka-python",
                   ) -> Iterator[tuple[subprocess.Popen[bytes], Callable[[], None]]]:
    """`ecst consume` into PostgreSQL database `state_db` (created here, dropped on exit) as a
    child process, as it runs in production: not sharing this process's interpreter (and GIL)
    with the writer threads. SIGTERM on exit (it finishes its batch)."""
    _ensure_database(st, state_db)
    logfile = tempfile.NamedTemporaryFile(prefix="ecst-bench-consumer-", suffix=".log", delete=False)
    env = {**os.environ, "ECST_STATE_URL": _state_url(st, state_db)}
    cmd = [sys.executable, "-m", "ecst", "consume", "--topic", topic, "--group", f"bench-{state_db}",
           "--group-instance-id", "", "--bootstrap-servers", st.kafka.bootstrap,
           "--batch-size", str(batch_size), "--kafka-client", kafka_client]
    proc = subprocess.Popen(cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT)

    def alive() -> None:
        if proc.poll() is not None:
            output = Path(logfile.name).read_text()[-2000:]
            raise RuntimeError(f"ecst consume exited with {proc.returncode}: {output}")

    try:
        yield proc, alive
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logfile.close()
        os.unlink(logfile.name)
        _delete_group(st, f"bench-{state_db}")
        _drop_database(st, state_db)


def _state_table(conn: psycopg.Connection, timeout_s: float, alive: Callable[[], None]) -> str:
    """The one state table ecst created (besides its ecst_* bookkeeping)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive()
        row = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                           "AND tablename NOT LIKE 'ecst\\_%' LIMIT 1").fetchone()
        if row:
            return str(row[0])
        if time.monotonic() > deadline:
            raise TimeoutError(f"ecst created no state table in {timeout_s} s")
        time.sleep(0.05)


# ----- streaming latency -------------------------------------------------------------------------
# Installed on the target table once the snapshot is applied: a deferred constraint trigger fires
# at the applying transaction's commit, once per written row, and logs the row's key, the source
# commit time the row carries (updated_at) and the target's clock at that moment.
LATENCY_DDL = """
CREATE TABLE {log} (id bigint, src_ts timestamptz, applied_at timestamptz);
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  INSERT INTO {log} VALUES (NEW.id, NEW.updated_at::text::timestamptz, clock_timestamp());
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER {fn} AFTER INSERT OR UPDATE ON {table}
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {fn}();
"""


# The local stack's cluster runs with synchronous_commit off (a disposable cluster, tuned for test
# speed): a commit then returns before its WAL is flushed, and logical decoding, which reads flushed
# WAL only, sees it when the WAL writer next flushes (every wal_writer_delay, 200 ms): up to a few
# hundred ms of latency, before either side's part, that a producer on PostgreSQL's default does
# not have. The writer commits as such a producer does.
SYNCHRONOUS_COMMIT = "SET synchronous_commit = on"


class Writer:
    """Updates at a fixed rate: transactions of `per_txn` rows, paced on a schedule (a late
    transaction is sent at once: the rate is kept as long as the database can), each setting
    updated_at to clock_timestamp(), the server's clock during the transaction."""

    def __init__(self, st: LocalStack, table: str, rows: int, rate: int, seconds: float,
                 threads: int) -> None:
        self.st, self.table, self.rows, self.rate, self.seconds = st, table, rows, rate, seconds
        self.threads = threads
        self.per_txn = max(1, rate // 100)  # about 100 transactions per second
        self.txns = max(1, round(rate * seconds / self.per_txn))
        self.lock = threading.Lock()
        self.next_txn = 0
        self.last: dict[int, Any] = {}  # id -> its last updated_at
        self.issued = 0
        self.error: BaseException | None = None

    def run(self) -> tuple[float, float]:
        """Write everything; (start, stop) as time.time()."""
        self.t0 = time.monotonic()
        start = time.time()
        workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if self.error:
            raise self.error
        return start, time.time()

    def _work(self) -> None:
        stmt = sql.SQL("UPDATE {} SET balance = balance + 1, full_name = 'User ' || id || ' v' || %s, "
                       "updated_at = clock_timestamp() WHERE id = ANY(%s) RETURNING id, updated_at"
                       ).format(sql.Identifier(self.table))
        interval = self.per_txn / self.rate
        try:
            with self.st.postgres.connect() as conn:
                conn.execute(SYNCHRONOUS_COMMIT)
                while True:
                    with self.lock:
                        j = self.next_txn
                        self.next_txn += 1
                    if j >= self.txns:
                        return
                    delay = self.t0 + j * interval - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    ids = [(j * self.per_txn + k) % self.rows + 1 for k in range(self.per_txn)]
                    done = conn.execute(stmt, (j, ids)).fetchall()
                    with self.lock:
                        self.issued += len(done)
                        for i, ts in done:
                            self.last[i] = ts
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self.error = exc


class TopicClock(threading.Thread):
    """Reads the change topic from its end while the writer runs: per key (`id`), the Kafka
    timestamp (ms) of its latest record, the time the Connect worker produced it."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = kafka.consumer(bootstrap, group_id=None)
        partitions = sorted(self.consumer.partitions_for_topic(topic) or ())
        tps = [kafka.TopicPartition(topic, p) for p in partitions]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)  # resolve the end now, before the writer starts
        self.stamps: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for records in self.consumer.poll(timeout_ms=200).values():
                    for r in records:
                        if r.key is not None:
                            self.stamps[orjson.loads(r.key)["payload"]["id"]] = r.timestamp
        finally:
            self.consumer.close()


def _percentile(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(p * 10) - 1]


def stream_latency(stack: Any, rate: int, seconds: float, side: str, *, rows: int | None = None,
                   threads: int | None = None, batch_size: int = BATCH, unnest: bool = False,
                   catch_up_timeout_s: float = 120.0, source_split: bool = True,
                   kafka_client: str = "kafka-python") -> dict[str, Any]:
    """Latency of streamed changes, producer commit to applied row, for `side` "ecst" or "sink".

    A new producer table (`rows` users, by default rate*seconds so no user is updated twice,
    capped at 100,000) is captured by its own Debezium connector; the side applies its snapshot
    into PostgreSQL in the same cluster (ecst: an `ecst consume` process into a new state database;
    sink: the JDBC sink connector into a new table of `bench_sink`). Then a writer issues `rate`
    updates per second for `seconds` (`threads` connections, 2 from 2,000/s; transactions of
    rate/100 rows, each setting `updated_at` to the server's clock_timestamp()).

    How it is timed, the same way for both sides: the target table gets a deferred constraint
    trigger that fires at each applying transaction's commit and logs (id, the row's updated_at,
    clock_timestamp()); a change's latency is the difference. Both clocks are the same Postgres
    server's, so no clock skew; the source side is the update statement's time, at most the few
    milliseconds of its small transaction before the commit. An update overwritten by a later one
    of the same row in the same applied batch has no sample (not with the default `rows`).

    With `source_split`, a consumer in this process also reads the topic during the run and takes
    each record's Kafka timestamp (set by the Connect worker's producer, ms): `to_kafka_p50_ms` and
    `to_kafka_p99_ms` are commit to Kafka, the part of the latency both sides share (Debezium
    reading the WAL, its poll interval, the producer). Only when no row is updated twice.

    Figures: p50/p99/max latency (ms) over the samples; `achieved_rate` (updates/s the writer
    issued); `backlog_s`, from the writer's last commit until the last change was applied (about
    the last change's latency when the side keeps up, growing with the run when it does not);
    `latency_trend_s`, the median latency of the last fifth of the changes (in commit order) minus
    that of the first fifth; `kept_up`: every change was applied, the writer reached 95 % of `rate`
    and the latency did not grow by 1 s or more over the run (a side that falls behind sees its
    latency grow by the backlog it accumulates). `cpu_s`: utime+stime of the applying process
    during the writes and the catch-up (the sink's: the whole Connect worker, the source connector
    included; ecst's: the `ecst consume` process).
    """
    if side not in ("ecst", "sink"):
        raise ValueError(f"side must be 'ecst' or 'sink', not {side!r}")
    st = _local(stack)
    rows = rows or max(1000, min(int(rate * seconds), 100_000))
    threads = threads or (2 if rate >= 2000 else 1)
    cap = Capture(st, users_table(st, rows))
    uid = cap.slot.removeprefix("bench_")
    result: dict[str, Any] = {"side": side, "rate": rate, "seconds": seconds, "rows": rows,
                              "threads": threads, "batch_size": batch_size}
    try:
        cap.apply()
        if side == "sink":
            target_db, table = SINK_DB, f"sink_{uid}"
            side_cm: Any = sink_connector(st, cap.topic, table, batch_size=batch_size, unnest=unnest)
            result["unnest"] = unnest
        else:
            target_db, table = f"bench_ecst_{uid}", ""
            side_cm = _ecst_consumer(st, cap.topic, target_db, batch_size, kafka_client)
            result["kafka_client"] = kafka_client
        with side_cm as (handle, alive):
            with st.postgres.connect(target_db) as target:
                if side == "ecst":
                    table = _state_table(target, 300, alive)
                _wait_final(target, table, None, rows, 600, alive)
                log_t, fn = sql.Identifier(f"bench_log_{uid}"), sql.Identifier(f"bench_log_{uid}")
                target.execute(sql.SQL(LATENCY_DDL).format(table=sql.Identifier(table), log=log_t, fn=fn))
                pid = st.connect.pid if side == "sink" else handle.pid
                cpu0 = cpu_seconds(pid)
                writer = Writer(st, cap.table, rows, rate, seconds, threads)
                clock = TopicClock(st.kafka.bootstrap, cap.topic) if source_split else None
                if clock:
                    clock.start()
                w_start, w_stop = writer.run()
                last = dict(writer.last)
                deadline = time.monotonic() + catch_up_timeout_s
                missing = len(last)
                while missing:
                    alive()
                    applied: dict[int, Any] = dict(target.execute(sql.SQL(
                        "SELECT id, max(src_ts) FROM {} GROUP BY id").format(log_t)).fetchall())
                    missing = sum(1 for i, ts in last.items() if i not in applied or bool(applied[i] < ts))
                    if not missing or time.monotonic() > deadline:
                        break
                    time.sleep(POLL_S)
                cpu1 = cpu_seconds(pid)
                if clock:
                    clock.stop.set()
                    clock.join()
                samples = target.execute(sql.SQL(
                    "SELECT id, extract(epoch FROM min(applied_at) - src_ts) * 1000, "
                    "extract(epoch FROM min(applied_at)), extract(epoch FROM src_ts) "
                    "FROM {} WHERE src_ts >= %s "
                    "GROUP BY id, src_ts").format(log_t),
                    (dt.datetime.fromtimestamp(w_start, dt.UTC),)).fetchall()
                target.execute(sql.SQL("DROP TRIGGER {} ON {}").format(fn, sql.Identifier(table)))
                target.execute(sql.SQL("DROP FUNCTION {}(); DROP TABLE {}").format(fn, log_t))
        lat = sorted(float(ms) for _, ms, _, _ in samples)
        last_applied = max((float(at) for _, _, at, _ in samples), default=None)
        by_commit = [float(ms) for _, ms, _, _ in sorted(samples, key=lambda r: r[3])]
        # commit to Kafka, for the changes whose key was updated once (then the key's record is its)
        to_kafka = sorted(clock.stamps[i] - float(src) * 1000 for i, _, _, src in samples
                          if i in clock.stamps) if clock and writer.issued <= rows else []
        fifth = len(by_commit) // 5
        trend = (statistics.median(by_commit[-fifth:]) - statistics.median(by_commit[:fifth])) / 1000 \
            if fifth else None
        achieved = writer.issued / (w_stop - w_start)
        result.update({
            "issued": writer.issued, "achieved_rate": round(achieved, 1), "samples": len(lat),
            "not_applied": missing,
            "p50_ms": round(_percentile(lat, 50), 1) if lat else None,
            "p99_ms": round(_percentile(lat, 99), 1) if lat else None,
            "max_ms": round(lat[-1], 1) if lat else None,
            "to_kafka_p50_ms": round(_percentile(to_kafka, 50), 1) if to_kafka else None,
            "to_kafka_p99_ms": round(_percentile(to_kafka, 99), 1) if to_kafka else None,
            "backlog_s": round(max(0.0, last_applied - w_stop), 3) if last_applied and not missing else None,
            "latency_trend_s": round(trend, 3) if trend is not None else None,
            "cpu_s": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None,
            "cpu_of": "connect worker JVM (source connector included)" if side == "sink" else "ecst consume",
        })
        result["kept_up"] = bool(not missing and achieved >= 0.95 * rate
                                 and trend is not None and trend < 1.0)
    finally:
        cap.remove()
        drop_table(st, cap.table)
    log.info("stream_latency: %s", result)
    return result

"""`make bench`: every throughput and latency comparison of issue 12, side by side in one run.

    .venv/bin/python -m benchmarks.harness [--quick] [--out DIR] [--only apply,raw,...]
    .venv/bin/python -m benchmarks.harness --only latency --rates 1000 --out /tmp/latency  # one goal

Scenarios (each comparison alternates its sides A B A B ..., `--repeats` rounds; medians):
- apply: a topic pre-filled by the real connector (a snapshot of N users, then N updates), read
  to the end by ecst into SQLite, by ecst into PostgreSQL and by Debezium's JDBC sink into
  PostgreSQL: events/s, CPU-seconds per 1,000 events, peak RSS (ecst; the sink runs inside the
  Connect worker's JVM, whose RSS is the worker's, so only its CPU is compared);
- raw: the same final rows by `COPY` into PostgreSQL and by one `executemany` upsert into SQLite,
  no Kafka: what the databases can take;
- bootstrap: on N existing users, `connectors apply` until ecst's copy is ready, against the time
  Debezium alone needs to put the snapshot into the topic;
- latency: producer commit to row applied, at each rate, ecst against the JDBC sink;
- scale: ecst reading a snapshot of each N: cost per row and peak RSS.

It writes, under --out (docs/ by default; .bench/quick/ with --quick): `benchmarks-raw.json`
(every figure, the machine, versions, load average), `benchmarks.md` (tables), the charts in
`benchmarks/*.png` and `benchmarks.json` (one entry per goal). Timings are never asserted: this
reports, and `.ci/run` runs `--quick` only so that the harness cannot rot.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from benchmarks import report
from benchmarks.stackbench import (
    ROOT,
    Capture,
    ConsumerProcess,
    drop_table,
    uid,
    update_all,
    users_table,
)
from ecst.consumer.store import StateStore
from ecst.exceptions import EcstError
from ecst.settings import Settings
from ecst.stack import LocalStack
from ecst.verify import read_state, verify_table

SCENARIOS = ("apply", "raw", "bootstrap", "latency", "scale")


@dataclass(frozen=True)
class Sizes:
    rows: int  # N users for apply, raw and bootstrap
    scale: tuple[int, ...]
    rates: tuple[int, ...]  # changes/s for the latency scenario
    seconds: float  # how long each rate is written
    repeats: int


GOAL_RATE = 3000  # changes/s: issue 12's goal compares p99 with the sink's at this rate
FULL = Sizes(rows=100_000, scale=(100_000, 1_000_000), rates=(500, 1000, 3000, 5000), seconds=60, repeats=3)
QUICK = Sizes(rows=1_000, scale=(500, 1_000), rates=(1000,), seconds=3, repeats=3)


@dataclass
class Run:
    """The results of one harness run, as written to benchmarks-raw.json."""

    quick: bool
    sizes: dict[str, Any]
    facts: dict[str, Any]
    scenarios: dict[str, Any] = field(default_factory=dict)


# ----- the machine ------------------------------------------------------------------------------
def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def machine_facts(stack: LocalStack) -> dict[str, Any]:
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    poms = "".join((ROOT / "deploy" / p).read_text() for p in ("pom.xml", "maven/jdbc/pom.xml"))

    def prop(name: str) -> str:
        return poms.split(f"<{name}>", 1)[1].split("<", 1)[0] if f"<{name}>" in poms else "?"

    with stack.postgres.connect() as conn:
        found = conn.execute("SHOW server_version").fetchone()
        assert found is not None  # SHOW always returns a row
        pg = found[0]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD") + ("-dirty" if _git("status", "--porcelain", "-uno")
                                                          else ""),
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(), "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
        "versions": {
            **{p: version(p) for p in ("kafka-python", "confluent-kafka", "SQLAlchemy", "psycopg", "orjson")},
            "postgresql": pg, "kafka": prop("kafka.version"), "debezium": prop("debezium.version"),
            "debezium-connector-jdbc": prop("debezium.jdbc.version"),
        },
    }


# ----- helpers ----------------------------------------------------------------------------------
def alternate(sides: dict[str, Callable[[], dict[str, Any]]], repeats: int,
              log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run every side once per round, in turn (A B C A B C ...); every run's figures."""
    runs = []
    for i in range(repeats):
        for side, fn in sides.items():
            figures = fn()
            runs.append({**figures, "side": side, "round": i})  # the side's name, whatever figures say
            log(f"  round {i + 1}/{repeats} {side}: " + ", ".join(
                f"{k}={v:,.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    return runs


class StateDatabases:
    """Fresh PostgreSQL databases on the stack's cluster, for state stores and sink targets."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.made: list[str] = []

    def new(self) -> str:
        name = f"bench_state_{uid()}"
        with self.stack.postgres.connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.made.append(name)
        return name

    def url(self, name: str) -> str:
        pw = self.stack.postgres.admin_password
        return f"postgresql://ecst:{pw}@127.0.0.1:{self.stack.settings.pg_port}/{name}"

    def drop_all(self) -> None:
        with self.stack.postgres.connect("postgres") as conn:
            for name in self.made:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.made.clear()


def check_equal(stack: LocalStack, table: str, state_url: str) -> None:
    """The state table equals the producer's table, every column of every row (ecst verify)."""
    store = StateStore(state_url)
    try:
        state = read_state(store, table)
    finally:
        store.close()
    with stack.postgres.connect() as conn:
        drift = verify_table(conn, f"public.{table}", state, table)
    if drift.drifted:
        raise RuntimeError(f"the state differs from the producer's {table}: {drift.summary()}")


class Prefilled:
    """A users table of N rows captured by the real connector: the topic holds the snapshot of N
    users, then one update of each (2N records)."""

    def __init__(self, stack: LocalStack, rows: int, *, updates: bool = True) -> None:
        self.stack, self.rows = stack, rows
        self.table = users_table(stack, rows)
        self.capture = Capture(stack, self.table)
        self.capture.apply()
        self.capture.wait_records(rows)
        self.records = rows
        if updates:
            self.records += update_all(stack, self.table)
            self.capture.wait_records(self.records)
        self.capture.stop()  # nothing writes to the topic any more, and the worker runs nothing else

    def close(self) -> None:
        self.capture.remove()
        drop_table(self.stack, self.table)


# ----- scenarios --------------------------------------------------------------------------------
def scenario_apply(stack: LocalStack, sizes: Sizes, dbs: StateDatabases, log: Callable[[str], None],
                   with_sink: bool = True, confluent: bool = True) -> dict[str, Any]:
    data = Prefilled(stack, sizes.rows)
    log(f"apply: {data.records:,} records in {data.capture.topic}")
    try:
        def ecst(url_of: Callable[[], str], client: str = "kafka-python",
                 extra: list[str] | None = None) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                url = url_of()
                res = ConsumerProcess(stack, data.capture.topic, url, kafka_client=client,
                                      extra=extra).result()
                check_equal(stack, data.table, url)
                return {"events_per_s": data.records / res["wall_s"],
                        "cpu_s_per_1000": 1000 * res["cpu_s"] / data.records,
                        "peak_rss_mb": res["peak_rss_mb"], "wall_s": res["wall_s"]}
            return run

        folder = tempfile.TemporaryDirectory()
        sqlite_url = lambda: f"sqlite:///{folder.name}/{uid()}.db"  # noqa: E731
        sides = {report.SQLITE: ecst(sqlite_url), report.PG: ecst(lambda: dbs.url(dbs.new())),
                 # before issue 12's decoding in the database: every row decoded in Python
                 report.PG_PYTHON: ecst(lambda: dbs.url(dbs.new()), extra=["--decode-in-python"])}
        if confluent:  # the optional client (kafka.client: confluent), beside the default
            sides[report.CONFLUENT_SQLITE] = ecst(sqlite_url, "confluent")
            sides[report.CONFLUENT_PG] = ecst(lambda: dbs.url(dbs.new()), "confluent")
        if with_sink:
            from benchmarks import scenarios_connect

            def sink() -> dict[str, Any]:
                res = scenarios_connect.sink_apply(stack, data.capture.topic, data.rows,
                                                   source_table=data.table)
                if not res.get("matches"):
                    raise RuntimeError(f"the JDBC sink's table differs from the producer's {data.table}: "
                                       f"{res.get('comparison')}")
                return {"events_per_s": data.records / res["wall_s"],
                        "cpu_s_per_1000": 1000 * res["worker_cpu_s"] / data.records, "wall_s": res["wall_s"]}
            sides[report.SINK] = sink
        runs = alternate(sides, sizes.repeats, log)
        folder.cleanup()
        return {"rows": data.rows, "records": data.records, "runs": runs}
    finally:
        data.close()
        dbs.drop_all()


def scenario_raw(stack: LocalStack, sizes: Sizes, dbs: StateDatabases,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """The final rows of N users, bulk-loaded with no Kafka and no guard: the databases' limit."""
    from ecst import source

    table = users_table(stack, sizes.rows)
    try:
        with stack.postgres.connect() as conn:
            cur = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(table)))
            assert cur.description is not None  # a SELECT describes its columns
            columns = [d.name for d in cur.description]
            rows = cur.fetchall()
        lite_rows = [tuple(v if v is None or isinstance(v, (int, float, str, bytes)) else str(v) for v in r)
                     for r in rows]

        def copy_pg() -> dict[str, Any]:
            name = dbs.new()
            with stack.postgres.connect(name) as conn:
                conn.execute(source.users_ddl(ROOT, "users"))
                started = time.perf_counter()
                with conn.transaction(), conn.cursor() as cur:
                    with cur.copy(sql.SQL("COPY users ({}) FROM STDIN").format(
                            sql.SQL(", ").join(map(sql.Identifier, columns)))) as copy:
                        for r in rows:
                            copy.write_row(r)
                took = time.perf_counter() - started
            return {"rows_per_s": len(rows) / took}

        def executemany_sqlite() -> dict[str, Any]:
            with tempfile.TemporaryDirectory() as d:
                db = sqlite3.connect(f"{d}/raw.db")
                db.execute(f"CREATE TABLE users ({', '.join(columns)}, PRIMARY KEY (id))")
                names = ", ".join(columns)
                marks = ", ".join("?" for _ in columns)
                sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
                started = time.perf_counter()
                with db:
                    db.executemany(f"INSERT INTO users ({names}) VALUES ({marks}) "
                                   f"ON CONFLICT (id) DO UPDATE SET {sets}", lite_rows)
                took = time.perf_counter() - started
                db.close()
            return {"rows_per_s": len(rows) / took}

        sides = {"COPY into PostgreSQL": copy_pg, "executemany upsert into SQLite": executemany_sqlite}
        runs = alternate(sides, sizes.repeats, log)
        return {"rows": len(rows), "runs": runs}
    finally:
        drop_table(stack, table)
        dbs.drop_all()


def scenario_bootstrap(stack: LocalStack, sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    """From `connectors apply` on N existing users: ecst's copy ready (SQLite state), against the
    snapshot being in the topic (Debezium alone). Each run is a new connector, slot and topic."""
    table = users_table(stack, sizes.rows)
    folder = tempfile.TemporaryDirectory()

    def ecst(client: str = "kafka-python") -> dict[str, Any]:
        capture = Capture(stack, table)
        try:
            url = f"sqlite:///{folder.name}/{uid()}.db"
            worker = ConsumerProcess(stack, capture.topic, url, until="ready", kafka_client=client)
            applied = capture.apply()
            res = worker.result()
            check_equal(stack, table, url)
            return {"seconds": res["ready_at"] - applied, "peak_rss_mb": res["peak_rss_mb"]}
        finally:
            capture.remove()

    def debezium() -> dict[str, Any]:
        capture = Capture(stack, table)
        try:
            applied = capture.apply()
            return {"seconds": capture.wait_records(sizes.rows) - applied}
        finally:
            capture.remove()

    try:
        runs = alternate({report.BOOT_ECST: ecst, report.BOOT_DEBEZIUM: debezium,
                          report.BOOT_CONFLUENT: lambda: ecst("confluent")}, sizes.repeats, log)
        return {"rows": sizes.rows, "runs": runs}
    finally:
        folder.cleanup()
        drop_table(stack, table)


def scenario_latency(stack: LocalStack, sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    from benchmarks import scenarios_connect

    by_rate = {}
    # the optional Kafka client runs at one rate too: the goal's (3,000), else the highest
    confluent_at = GOAL_RATE if GOAL_RATE in sizes.rates else max(sizes.rates)
    for rate in sizes.rates:
        log(f"latency at {rate:,} changes/s for {sizes.seconds:.0f} s")
        sides: dict[str, Callable[[], dict[str, Any]]] = {
            side: functools.partial(scenarios_connect.stream_latency, stack, rate, sizes.seconds, side)
            for side in ("ecst", "sink")}
        if rate == confluent_at:
            sides[report.LATENCY_CONFLUENT] = functools.partial(
                scenarios_connect.stream_latency, stack, rate, sizes.seconds, "ecst",
                kafka_client="confluent")
        by_rate[str(rate)] = alternate(sides, sizes.repeats, log)
    return {"seconds": sizes.seconds, "rates": by_rate}


def scenario_scale(stack: LocalStack, sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    """ecst reading the snapshot of N users into SQLite, for each N: cost per row, peak RSS."""
    runs = []
    for n in sizes.scale:
        data = Prefilled(stack, n, updates=False)
        try:
            with tempfile.TemporaryDirectory() as d:
                url = f"sqlite:///{d}/state.db"
                res = ConsumerProcess(stack, data.capture.topic, url).result(timeout_s=3600)
                check_equal(stack, data.table, url)
            runs.append({"rows": n, "events_per_s": n / res["wall_s"],
                         "cpu_us_per_row": 1e6 * res["cpu_s"] / n, "peak_rss_mb": res["peak_rss_mb"]})
            log(f"  scale N={n:,}: {runs[-1]}")
        finally:
            data.close()
    return {"runs": runs}


# ----- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    sizes, only, out, quick = options(argv)

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    try:
        return _run(sizes, only, out, quick, log)
    except (EcstError, RuntimeError, TimeoutError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


def options(argv: list[str] | None) -> tuple[Sizes, list[str], Path, bool]:
    """The command line's sizes, scenarios, output folder and quick flag (exit 2 with a message
    naming the option when one is wrong)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI: figures not meaningful")
    parser.add_argument("--out", type=Path,
                        help="where to write (docs/ by default, .bench/quick/ with --quick)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"a subset of {','.join(SCENARIOS)}")
    parser.add_argument("--rows", type=int, help="override N (apply, raw, bootstrap)")
    parser.add_argument("--seconds", type=float, help="override the latency scenario's duration per rate")
    parser.add_argument("--repeats", type=int, help="override the rounds per comparison (3 or more)")
    parser.add_argument("--rates", help="override the latency scenario's rates, changes/s: 1000 or 500,3000")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    rates = None
    if args.rates is not None:
        try:
            rates = tuple(int(r) for r in args.rates.split(","))
        except ValueError:
            rates = ()
        if not rates or min(rates) <= 0:
            parser.error(f"--rates {args.rates!r}: give whole numbers of changes/s above 0, comma-separated")
    given = {"rows": args.rows, "seconds": args.seconds, "repeats": args.repeats, "rates": rates}
    overrides = {k: v for k, v in given.items() if v is not None}
    sizes = Sizes(**{**asdict(sizes), **overrides})
    if sizes.repeats < 3:
        parser.error("--repeats must be 3 or more: comparisons are medians of interleaved rounds")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(only) - set(SCENARIOS):
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}: choose from {', '.join(SCENARIOS)}")
    out = args.out or (ROOT / ".bench" / "quick" if args.quick else ROOT / "docs")
    return sizes, only, out, args.quick


def _run(sizes: Sizes, only: list[str], out: Path, quick: bool, log: Callable[[str], None]) -> int:
    """Every scenario of `only` on the local stack; a stack this run started is stopped at the end
    (one already running is left running)."""
    stack = LocalStack(Settings.from_env())
    started_here = not stack.is_up()
    stack.up()
    try:
        return _scenarios(stack, sizes, only, out, quick, log)
    finally:
        if started_here:
            stack.down()
            log("stopped the local stack this run started")


def _scenarios(stack: LocalStack, sizes: Sizes, only: list[str], out: Path, quick: bool,
               log: Callable[[str], None]) -> int:
    run = Run(quick=quick, sizes=asdict(sizes), facts=machine_facts(stack))
    dbs = StateDatabases(stack)
    started = time.monotonic()
    for name in only:
        log(f"scenario {name}")
        if name == "apply":
            run.scenarios[name] = scenario_apply(stack, sizes, dbs, log)
        elif name == "raw":
            run.scenarios[name] = scenario_raw(stack, sizes, dbs, log)
        elif name == "bootstrap":
            run.scenarios[name] = scenario_bootstrap(stack, sizes, log)
        elif name == "latency":
            run.scenarios[name] = scenario_latency(stack, sizes, log)
        elif name == "scale":
            run.scenarios[name] = scenario_scale(stack, sizes, log)
        # after every scenario: a run stopped later keeps what it measured
        run.facts["load_average_end"] = os.getloadavg()
        run.facts["duration_s"] = round(time.monotonic() - started)
        out.mkdir(parents=True, exist_ok=True)
        (out / "benchmarks-raw.json").write_text(json.dumps(asdict(run), indent=1, default=str) + "\n")
        report.write(asdict(run), out)
    log(f"wrote {out / 'benchmarks.md'}, {out / 'benchmarks.json'}, {out / 'benchmarks-raw.json'} and charts")
    for goal in report.goals(asdict(run)):
        log(f"  goal {goal['name']}: {goal['measured']} (target {goal['target']} {goal['unit']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

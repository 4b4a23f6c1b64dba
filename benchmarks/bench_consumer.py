"""Consumer throughput, measured side by side in one run (medians of repeats, and ratios).

    .venv/bin/python benchmarks/bench_consumer.py [--rows 20000] [--repeats 5]
    .venv/bin/python benchmarks/bench_consumer.py --ab REF [--parts decode,apply,pg] [--rows 20000]
        [--repeats 5] [--pg-url URL] [--pg-variants]

1. decode: one users change event, JSON converter with the schema embedded vs without;
2. apply: batches of 2000 decoded snapshot rows into SQLite vs PostgreSQL state stores;
(The end-to-end snapshot, `--e2e` before, is the bootstrap scenario of `make bench` now.)

--ab REF compares the code at git revision REF (A, before) with this tree (B, after) on the
in-process parts only, nothing on the stack: decode; apply into SQLite (a snapshot load, then a
stream of updates and deletes over it, then single updates each in its own batch). One worker
process per side builds its inputs once; then the sides take turns, one timed pass each
(A B A B ...), for --repeats rounds, so that both meet the same moments of a noisy machine. It
prints each side's median, the ratio of the medians, the median of the rounds' ratios and every
figure; B is also measured with its reference writer (`StateStore(writer="sqlalchemy")`).

The part `pg` measures the same apply into PostgreSQL (--pg-url, else the local stack's): each
side writes to a database of its own (created, and dropped at the end), emptied before each pass.
--pg-variants adds two sides of B's PostgreSQL writer: executemany only (`B exec.`), and COPY
for every batch, one row included (`B copy`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The tree measured: this one, or (--ab) the one a parent process extracted from git.
sys.path.insert(0, os.environ.get("ECST_BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

from ecst.consumer.events import ChangeEvent, Record, decode  # noqa: E402
from ecst.consumer.store import StateStore  # noqa: E402
from ecst.settings import Settings  # noqa: E402
from ecst.stack import LocalStack  # noqa: E402
from tests.unit.consumer.envelopes import envelope, row  # noqa: E402


def decoded(record: Record) -> ChangeEvent:
    """The event of a record known to carry one (not a tombstone, not a no-op)."""
    event = decode(record)
    assert event is not None, record
    return event


def median_rate(fn: Callable[[], object], n: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - started))
    return statistics.median(rates)


def bench_decode(repeats: int) -> dict[str, float]:
    n = 20000
    with_schema = [Record("t", 0, i, *envelope("u", i, 1000 + i, after=row(i))) for i in range(n)]
    without = [Record("t", 0, i, *envelope("u", i, 1000 + i, after=row(i), schemas=False)) for i in range(n)]
    return {
        "decode, schema embedded (events/s)":
            median_rate(lambda: [decode(r) for r in with_schema], n, repeats),
        "decode, no schema (events/s)": median_rate(lambda: [decode(r) for r in without], n, repeats),
    }


def bench_apply(repeats: int, rows: int, pg_url: str | None) -> dict[str, float]:
    batch = 2000
    events = [decode(Record("t", 0, i, *envelope("r", i, 1000, after=row(i), snapshot="true")))
              for i in range(rows)]
    out = {}
    targets = {"sqlite": None, "postgresql": pg_url}
    for name, url in targets.items():
        if name == "postgresql" and not url:
            continue

        def run(url: str | None = url) -> None:
            if url is None:
                d = tempfile.mkdtemp()
                store = StateStore(f"sqlite:///{d}/state.db")
            else:
                store = StateStore(url)
                with store.engine.begin() as conn:
                    from sqlalchemy import text

                    for t in ("users", "ecst_offsets", "ecst_deleted", "ecst_columns", "ecst_snapshots"):
                        conn.execute(text(f"DROP TABLE IF EXISTS {t}"))
                store.close()
                store = StateStore(url)
            for i in range(0, rows, batch):
                store.apply(events[i : i + batch], {("t", 0): i + batch})
            store.close()

        out[f"apply into {name} (rows/s, batches of {batch})"] = median_rate(run, rows, repeats)
    return out


# ----- --ab: before and after, in-process parts only ------------------------------------------
AB_BATCH = 2000


def _rate(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    fn()
    return n / (time.perf_counter() - started)


class Measures:
    """The in-process measures of one tree, its inputs built once; each call is one timed pass."""

    def __init__(self, rows: int, writer: str | None, pg_url: str | None = None,
                 copy_min: int | None = None) -> None:
        self.rows = rows
        self.kwargs: dict[str, Any] = {"writer": writer} if writer else {}
        self.pg_url, self.copy_min = pg_url, copy_min
        self.records = {
            schemas: [Record("t", 0, i, *envelope("u", i, 1000 + i, after=row(i), schemas=schemas))
                      for i in range(rows)] for schemas in (True, False)}
        self.load = [decoded(Record("t", 0, i, *envelope("r", i, 1000, after=row(i), snapshot="true")))
                     for i in range(rows)]
        # an update of every key, and a delete of every tenth
        self.stream = [decoded(Record("t", 0, rows + i,
                                     *(envelope("d", i, 2000 + i, before=row(i)) if i % 10 == 0 else
                                       envelope("u", i, 2000 + i, after=row(i, bio=f"changed {i}")))))
                       for i in range(rows)]
        # updates of single keys, each alone in its batch (a stream that keeps up)
        self.singles = [decoded(Record("t", 0, 2 * rows + i,
                                      *envelope("u", i % rows, 10**6 + i, after=row(i % rows))))
                        for i in range(min(rows, 300))]
        self.decode()
        self.apply()  # warm: imports, caches
        if pg_url:
            self.pg()

    def decode(self) -> dict[str, float]:
        with_schema, without, n = self.records[True], self.records[False], self.rows
        return {"decode, schema embedded (events/s)": _rate(lambda: [decode(r) for r in with_schema], n),
                "decode, no schema (events/s)": _rate(lambda: [decode(r) for r in without], n)}

    def apply(self) -> dict[str, float]:
        """A snapshot load into a new SQLite state, then the stream over it, in batches of AB_BATCH."""
        folder = tempfile.TemporaryDirectory()
        out = self._apply(StateStore(f"sqlite:///{folder.name}/state.db", **self.kwargs), "SQLite")
        folder.cleanup()
        return out

    def pg(self) -> dict[str, float]:
        """The same into an emptied PostgreSQL database."""
        assert self.pg_url is not None
        from sqlalchemy import text

        empty = StateStore(self.pg_url)
        with empty.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        empty.close()
        store = StateStore(self.pg_url, **self.kwargs)
        if self.copy_min is not None:
            from ecst.consumer.writes_postgres import PostgresWriters

            store.writer = PostgresWriters(copy_min=self.copy_min)
        return self._apply(store, "PostgreSQL")

    def _apply(self, store: StateStore, name: str) -> dict[str, float]:

        def apply_all(events: list[ChangeEvent], first_offset: int) -> None:
            for i in range(0, len(events), AB_BATCH):
                store.apply(events[i : i + AB_BATCH], {("t", 0): first_offset + i + AB_BATCH})

        def one_by_one(events: list[ChangeEvent], first_offset: int) -> None:
            for i, e in enumerate(events):
                store.apply([e], {("t", 0): first_offset + i + 1})

        out = {f"apply into {name}, snapshot load (rows/s)":
               _rate(lambda: apply_all(self.load, 0), self.rows)}
        out[f"apply into {name}, updates and deletes (rows/s)"] = _rate(
            lambda: apply_all(self.stream, self.rows), self.rows)
        singles = self.singles
        out[f"apply into {name}, one-row batches (batches/s)"] = _rate(
            lambda: one_by_one(singles, 2 * self.rows), len(singles))
        store.close()
        return out


def serve_measures(rows: int, writer: str | None, pg_url: str | None, copy_min: int | None) -> None:
    """An --ab worker: builds its inputs, says "ready", then runs one measure per line of stdin."""
    measures = Measures(rows, writer, pg_url, copy_min)
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(getattr(measures, line.strip())()), flush=True)


def _pg_databases(pg_url: str, names: list[str]) -> tuple[dict[str, str], Callable[[], None]]:
    """A new database per name on the server of `pg_url` (its URLs), and what drops them."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from ecst.consumer.store import normalize_url

    server = make_url(normalize_url(pg_url))
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    made = {n: f"ecst_bench_{n}_{uuid.uuid4().hex[:8]}" for n in names}
    with admin.connect() as conn:
        for db in made.values():
            conn.execute(text(f'CREATE DATABASE "{db}"'))

    def drop() -> None:
        with admin.connect() as conn:
            for db in made.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()

    return {n: server.set(database=db).render_as_string(hide_password=False) for n, db in made.items()}, drop


def run_ab(ref: str, parts: list[str], rows: int, repeats: int, pg_url: str | None = None,
           pg_variants: bool = False) -> None:
    root = Path(__file__).resolve().parents[1]
    before = Path(tempfile.mkdtemp(prefix="ecst-bench-a-"))
    archive = subprocess.run(["git", "-C", str(root), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    # (side, tree, writer, copy_min)
    sides: list[tuple[str, str, str | None, int | None]] = [("A", str(before), None, None),
                                                            ("B", str(root), None, None)]
    if "apply" in parts or "pg" in parts:
        sides.append(("B ref.", str(root), "sqlalchemy", None))
    if "pg" in parts and pg_variants:
        sides += [("B exec.", str(root), None, 10**9), ("B copy", str(root), None, 1)]
    urls: dict[str, str] = {}
    drop_databases: Callable[[], None] = lambda: None  # noqa: E731
    if "pg" in parts:
        assert pg_url is not None
        urls, drop_databases = _pg_databases(pg_url, [f"side{i}" for i in range(len(sides))])
    workers = {}
    for i, (side, tree, writer, copy_min) in enumerate(sides):  # one process per side, inputs built once
        cmd = [sys.executable, __file__, "--serve", "--rows", str(rows)]
        cmd += ["--writer", writer] if writer else []
        cmd += ["--pg-url", urls[f"side{i}"]] if urls else []
        cmd += ["--copy-min", str(copy_min)] if copy_min is not None else []
        process = workers[side] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                   text=True, env={**os.environ, "ECST_BENCH_TREE": tree})
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    figures: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(repeats):
            for part in parts:
                for side, _tree, writer, copy_min in sides:  # A B A B ...: each pass next to the other's
                    if (part == "decode" and (writer or copy_min is not None)) or (
                            part == "apply" and copy_min is not None):
                        continue
                    worker = workers[side]
                    assert worker.stdin is not None and worker.stdout is not None
                    worker.stdin.write(part + "\n")
                    worker.stdin.flush()
                    for measure, rate in json.loads(worker.stdout.readline()).items():
                        figures.setdefault((measure, side), []).append(rate)
    finally:
        for worker in workers.values():
            assert worker.stdin is not None
            worker.stdin.close()
            worker.wait()
        shutil.rmtree(before)
        drop_databases()
    measures = list(dict.fromkeys(m for m, _ in figures))
    extra = [side for side, *_ in sides[2:]]
    print(f"A = {ref}, B = this tree; {repeats} rounds, the sides alternating pass by pass; {rows} rows, "
          f"batches of {AB_BATCH}; medians, and the median of the rounds' B/A ratios")
    width = max(len(m) for m in measures)
    print(f"{'measure':<{width}}  {'A':>10}  {'B':>10}  {'B/A':>5}  {'rounds':>6}"
          + "".join(f"  {side:>10}" for side in extra))
    for m in measures:
        a, b = figures[(m, "A")], figures[(m, "B")]
        ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))
        cells = "".join(f"  {statistics.median(figures[(m, side)]):>10,.0f}" if (m, side) in figures
                        else f"  {'':>10}" for side in extra)
        print(f"{m:<{width}}  {statistics.median(a):>10,.0f}  {statistics.median(b):>10,.0f}  "
              f"{statistics.median(b) / statistics.median(a):>5.2f}  {ratio:>6.2f}{cells}")
    print(json.dumps({f"{m} [{side}]": [round(v) for v in vs] for (m, side), vs in figures.items()}))


def local_pg_url() -> str | None:
    """The local stack's PostgreSQL (a `bench` database made if missing), if it is up."""
    stack = LocalStack(Settings.from_env())
    if not stack.postgres.pid:
        return None
    with stack.postgres.connect("postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname='bench'").fetchone():
            conn.execute("CREATE DATABASE bench")
    pw = stack.postgres.admin_password
    return f"postgresql://ecst:{pw}@127.0.0.1:{stack.settings.pg_port}/bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pg-url",
                        help="PostgreSQL URL for the apply benchmark (default: the local stack's)")
    parser.add_argument("--ab", metavar="REF", help="compare git revision REF (A) with this tree (B)")
    parser.add_argument("--parts", default="decode,apply",
                        help="with --ab: any of decode, apply (SQLite), pg (PostgreSQL)")
    parser.add_argument("--pg-variants", action="store_true",
                        help="with --ab and pg: also B's PostgreSQL writer by executemany only, by COPY only")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # an --ab worker
    parser.add_argument("--writer", help=argparse.SUPPRESS)
    parser.add_argument("--copy-min", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_measures(args.rows, args.writer, args.pg_url, args.copy_min)
        return
    if args.ab:
        if args.repeats < 3:
            parser.error("--ab needs --repeats 3 or more")
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        pg_url = args.pg_url
        if "pg" in parts and pg_url is None:
            pg_url = local_pg_url()
            if pg_url is None:
                parser.error("--parts pg needs --pg-url or the local stack up (`ecst stack up`)")
        run_ab(args.ab, parts, args.rows, args.repeats, pg_url, args.pg_variants)
        return
    results = bench_decode(args.repeats)
    pg_url = args.pg_url if args.pg_url is not None else local_pg_url()
    results.update(bench_apply(args.repeats, args.rows, pg_url))
    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"{k:<{width}}  {v:>12,.1f}")
    d = results["decode, no schema (events/s)"] / results["decode, schema embedded (events/s)"]
    print(f"{'ratio: decode without / with schema':<{width}}  {d:>12.2f}")
    sq, pg = (results.get(f"apply into {n} (rows/s, batches of 2000)") for n in ("sqlite", "postgresql"))
    if sq and pg:
        print(f"{'ratio: apply SQLite / PostgreSQL':<{width}}  {sq / pg:>12.2f}")
    print(json.dumps({k: round(v, 1) for k, v in results.items()}))


if __name__ == "__main__":
    main()

"""Consumer throughput, measured side by side in one run (medians of repeats, and ratios).

    .venv/bin/python benchmarks/bench_consumer.py [--rows 20000] [--repeats 5] [--e2e]

1. decode: one users change event, JSON converter with the schema embedded vs without;
2. apply: batches of 2000 decoded snapshot rows into SQLite vs PostgreSQL state stores;
3. --e2e: on the local stack (`ecst stack up`), a producer table of --rows users, a connector,
   and the consumer until its copy is ready: wall time and rows/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecst.consumer.events import Record, decode  # noqa: E402
from ecst.consumer.store import StateStore  # noqa: E402
from ecst.settings import Settings  # noqa: E402
from ecst.stack import LocalStack  # noqa: E402
from tests.unit.consumer.envelopes import envelope, row  # noqa: E402


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


def bench_e2e(rows: int) -> dict[str, float]:
    import yaml

    from ecst import source
    from ecst.connectors import apply as apply_mod
    from ecst.connectors.client import ConnectClient
    from ecst.connectors.definition import parse_definition
    from ecst.connectors.slots import wait_for_slot_inactive
    from ecst.consumer.runner import Consumer
    from ecst.demo import delete_topics, topic_for

    stack = LocalStack(Settings.from_env())
    stack.up()
    uid = uuid.uuid4().hex[:8]
    table = f"bench_{uid}"
    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "connectors" / "users.yaml").read_text())
    doc["name"] = f"bench-{uid}"
    doc["config"].update({"table.include.list": f"public.{table}", "slot.name": f"bench_{uid}",
                          "publication.name": f"bench_{uid}", "topic.prefix": f"b{uid}",
                          "signal.data.collection": f"public.{table}_signal",
                          "signal.kafka.topic": f"b{uid}.signals",
                          "signal.kafka.bootstrap.servers": stack.kafka.bootstrap,
                          "notification.sink.topic.name": f"b{uid}.notifications"})
    definition = parse_definition(doc, environ={})
    client = ConnectClient(stack.connect.url)
    conn = stack.postgres.connect()
    out = {}
    try:
        source.create_users_table(conn, table, rows)
        source.prepare_capture(conn, table, f"bench_{uid}", signal_table=f"{table}_signal")
        d = tempfile.mkdtemp()
        store = StateStore(f"sqlite:///{d}/state.db")
        started = time.perf_counter()
        apply_mod.apply(client, definition)
        Consumer(store, [topic_for(definition)], bootstrap_servers=stack.kafka.bootstrap,
                 group_id=f"bench-{uid}", batch_size=2000).run(until_ready=True)
        took = time.perf_counter() - started
        assert len(store.rows(table)) == rows
        store.close()
        out[f"snapshot of {rows} users, connector apply to consumer ready (s)"] = took
        out["  of which rows/s"] = rows / took
    finally:
        client.delete(definition.name)
        wait_for_slot_inactive(conn, f"bench_{uid}")
        source.drop_capture(conn, f"bench_{uid}", f"bench_{uid}")
        conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_signal")
        delete_topics(stack.kafka.bootstrap, [topic_for(definition), f"b{uid}.signals",
                                              f"b{uid}.notifications"])
        conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pg-url",
                        help="PostgreSQL URL for the apply benchmark (default: the local stack's)")
    parser.add_argument("--e2e", action="store_true", help="also measure a snapshot on the local stack")
    args = parser.parse_args()
    results = bench_decode(args.repeats)
    pg_url = args.pg_url
    if pg_url is None:
        stack = LocalStack(Settings.from_env())
        if stack.postgres.pid:
            with stack.postgres.connect("postgres") as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname='bench'").fetchone():
                    conn.execute("CREATE DATABASE bench")
            pw = stack.postgres.admin_password
            pg_url = f"postgresql://ecst:{pw}@127.0.0.1:{stack.settings.pg_port}/bench"
    results.update(bench_apply(args.repeats, args.rows, pg_url))
    if args.e2e:
        results.update(bench_e2e(args.rows))
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

"""Re-bootstrap time per mode, measured side by side in one run on the local stack.

    .venv/bin/python benchmarks/bench_rebootstrap.py [--rows 100000] [--repeats 3]

A producer table of --rows users is captured by its own connector, and a consumer builds its
copy (SQLite). Then, in each repeat, every mode rebuilds that copy from scratch into a shadow and
swaps it in: replay, incremental, a filtered backfill of 10% of the keys, blocking, fresh (last:
it resets the connector). Each rebuild is checked against the producer table. Prints the median
wall time per mode, rows/s and the ratio to replay.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecst import source, verify  # noqa: E402
from ecst.connectors import apply as apply_mod  # noqa: E402
from ecst.connectors.client import ConnectClient  # noqa: E402
from ecst.connectors.definition import parse_definition  # noqa: E402
from ecst.connectors.slots import wait_for_slot_inactive  # noqa: E402
from ecst.consumer.config import ConsumerConfig, TopicMapping  # noqa: E402
from ecst.consumer.rebuild import SnapshotSource, rebuild  # noqa: E402
from ecst.consumer.runner import Consumer  # noqa: E402
from ecst.consumer.store import StateStore  # noqa: E402
from ecst.demo import delete_topics, topic_for  # noqa: E402
from ecst.settings import Settings  # noqa: E402
from ecst.stack import LocalStack  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    stack = LocalStack(Settings.from_env())
    stack.up()
    uid = uuid.uuid4().hex[:8]
    table, signal_table = f"bench_{uid}", f"bench_signal_{uid}"
    doc = yaml.safe_load((ROOT / "connectors" / "users.yaml").read_text())
    doc["name"] = f"bench-{uid}"
    doc["config"].update({
        "table.include.list": f"public.{table}", "slot.name": f"bench_{uid}",
        "publication.name": f"bench_{uid}", "topic.prefix": f"b{uid}",
        "signal.data.collection": f"public.{signal_table}", "signal.kafka.topic": f"b{uid}.signals",
        "signal.kafka.bootstrap.servers": stack.kafka.bootstrap,
        "notification.sink.topic.name": f"b{uid}.notifications",
    })
    definition = parse_definition(doc, environ={})
    topic = topic_for(definition)
    client = ConnectClient(stack.connect.url)
    conn = stack.postgres.connect()
    url = f"sqlite:///{tempfile.mkdtemp()}/state.db"
    config = ConsumerConfig(topics=(TopicMapping(topic),), group_id=f"bench-{uid}", batch_size=2000)
    snap = SnapshotSource(client, definition.name, "kafka", stack.postgres.connect)
    timings: dict[str, list[float]] = {}
    try:
        source.create_users_table(conn, table, args.rows)
        source.prepare_capture(conn, table, f"bench_{uid}", signal_table=signal_table)
        conn.execute(f"ANALYZE {table}")
        apply_mod.apply(client, definition)
        first = Consumer(StateStore(url), bootstrap_servers=stack.kafka.bootstrap, config=config)
        first.run(until_ready=True)
        key = verify.primary_key(conn, table)
        modes = [("replay", None), ("incremental", None),
                 ("incremental --where (10%)", f"id <= {args.rows // 10}"),
                 ("blocking", None), ("fresh", None)]
        for repeat in range(args.repeats):
            for label, condition in modes:
                mode = label.split()[0]
                started = time.perf_counter()
                result = rebuild(mode, url, config, stack.kafka.bootstrap, source=snap, condition=condition)
                took = time.perf_counter() - started
                store = StateStore(url)
                check = verify.compare_rows(verify.source_rows(conn, table), store.rows(table), key)
                store.close()
                assert check.matches, f"{label}: {check.summary()}"
                timings.setdefault(label, []).append(took)
                print(f"repeat {repeat + 1} {label}: {took:.1f} s ({result.summary()})", file=sys.stderr)
    finally:
        client.delete(definition.name)
        wait_for_slot_inactive(conn, f"bench_{uid}")
        source.drop_capture(conn, f"bench_{uid}", f"bench_{uid}")
        conn.execute(f'DROP TABLE IF EXISTS "{table}", "{signal_table}"')
        delete_topics(stack.kafka.bootstrap, [topic, f"b{uid}.signals", f"b{uid}.notifications"])
        conn.close()
    replay = statistics.median(timings["replay"])
    print(f"{'mode':<28} {'median s':>9} {'rows/s':>9} {'vs replay':>9}   ({args.rows:,} users, "
          f"{args.repeats} repeats)")
    out = {}
    for label, values in timings.items():
        med = statistics.median(values)
        rows = args.rows // 10 if "--where" in label else args.rows
        print(f"{label:<28} {med:>9.1f} {rows / med:>9,.0f} {med / replay:>9.2f}")
        out[label] = round(med, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

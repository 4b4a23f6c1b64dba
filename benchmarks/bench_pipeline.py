"""The consumer end to end, from a pre-filled topic to a caught-up state: serial vs overlapped
stages, SQLite vs PostgreSQL state, and kafka-python's fetch options.

    export ECST_HOME=... ECST_PG_PORT=... ECST_KAFKA_PORT=...   # a local stack's settings
    .venv/bin/ecst stack up
    .venv/bin/python benchmarks/bench_pipeline.py fill [--records 100000] [--partitions 3]
    .venv/bin/python benchmarks/bench_pipeline.py e2e --topic TOPIC [--rounds 3] [--states sqlite,postgresql]
    .venv/bin/python benchmarks/bench_pipeline.py fetch --topic TOPIC [--rounds 3]
    .venv/bin/python benchmarks/bench_pipeline.py latency [--records 30] [--rounds 3]

`fill` produces --records Debezium-shaped change records (JSON with the schema embedded, as
connectors/users.yaml writes them; tests/unit/consumer/envelopes.py) to a new topic keyed by
id: the first half creates users, the second half updates them. It prints the topic's name.

`e2e` runs `Consumer.run(until_caught_up=True)` over the whole topic into a fresh state (a new
SQLite file, or a new database on the stack's PostgreSQL) with a new consumer group, for each
variant in turn (serial, overlap; A B A B ...) for --rounds rounds. Each run's rate is records /
seconds from the start of `run` (group join included) to the caught-up state; "steady" leaves
out the time before the first batch was applied. It prints each variant's medians and the
ratio of the medians.

`latency` sends one record at a time to a new, idle topic while a consumer runs (SQLite state), and
prints the median delay from the send to the commit of the transaction that applied it, serial vs overlap.

`fetch` reads the whole topic with a bare KafkaConsumer (assigned partitions, no group, no
decode, no state) for each set of fetch options in FETCH_VARIANTS, in turns, and prints the
median rate of each: the Kafka side of the consumer on its own.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

from ecst import kafka  # noqa: E402
from ecst.consumer.group import FETCH_OPTIONS  # noqa: E402
from ecst.consumer.runner import Consumer  # noqa: E402
from ecst.consumer.store import StateStore  # noqa: E402
from ecst.settings import Settings  # noqa: E402
from ecst.stack import LocalStack  # noqa: E402
from tests.unit.consumer.envelopes import envelope, row  # noqa: E402

MiB = 1024 * 1024
KAFKA_PYTHON = {"fetch_max_bytes": 50 * MiB, "max_partition_fetch_bytes": 1 * MiB, "fetch_min_bytes": 1,
                "fetch_max_wait_ms": 500, "receive_buffer_bytes": None}
# name -> options over kafka-python's defaults (max_poll_records is the batch size, 2000)
FETCH_VARIANTS: dict[str, dict[str, Any]] = {
    "kafka-python defaults": {},
    "partition 4 MiB": {"max_partition_fetch_bytes": 4 * MiB},
    "partition 16 MiB": {"max_partition_fetch_bytes": 16 * MiB},
    "partition 16 MiB, rcvbuf 4 MiB": {"max_partition_fetch_bytes": 16 * MiB,
                                       "receive_buffer_bytes": 4 * MiB},
    "partition 16 MiB, min 1 MiB/100 ms": {"max_partition_fetch_bytes": 16 * MiB, "fetch_min_bytes": MiB,
                                           "fetch_max_wait_ms": 100},
    "ecst (FETCH_OPTIONS)": dict(FETCH_OPTIONS),
}


def stack() -> LocalStack:
    return LocalStack(Settings.from_env())


def fill(bootstrap: str, records: int, partitions: int) -> str:
    topic = f"bench.pipeline.{uuid.uuid4().hex[:8]}"
    kafka.ensure_topic(bootstrap, topic, partitions=partitions)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024,
                             max_request_size=8 * MiB, acks=1)
    half = records // 2
    for i in range(records):
        uid = i % half if half else i
        op = "c" if i < half else "u"
        key, value = envelope(op, uid, 1000 + i, after=row(uid, bio=f"bio {i}"))
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    return topic


def topic_size(bootstrap: str, topic: str) -> int:
    begins, ends = kafka.topic_offsets(bootstrap, [topic])
    return sum(ends[tp] - begins.get(tp, 0) for tp in ends)


def state_url(name: str, st: LocalStack, workdir: Path) -> tuple[str, Callable[[], None]]:
    """A fresh state URL, and how to remove it."""
    if name == "sqlite":
        path = workdir / f"{uuid.uuid4().hex[:8]}.db"

        def remove() -> None:
            for p in workdir.glob(f"{path.name}*"):
                p.unlink(missing_ok=True)

        return f"sqlite:///{path}", remove
    db = f"bench_{uuid.uuid4().hex[:8]}"
    with st.postgres.connect("postgres") as conn:
        conn.execute(f"CREATE DATABASE {db}")
    url = f"postgresql://ecst:{st.postgres.admin_password}@127.0.0.1:{st.settings.pg_port}/{db}"

    def drop() -> None:
        with st.postgres.connect("postgres") as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    return url, drop


def run_e2e(bootstrap: str, topic: str, url: str, overlap: bool, batch_size: int,
            fetch: dict[str, Any] | None) -> tuple[float, float, int]:
    """(seconds from run start to caught up, seconds from the first applied batch, records)."""
    store = StateStore(url)
    first: list[float] = []
    try:
        consumer = Consumer(store, [topic], bootstrap_servers=bootstrap,
                            group_id=f"bench-{uuid.uuid4().hex[:8]}", batch_size=batch_size,
                            overlap=overlap, kafka_options=fetch)
        started = time.perf_counter()

        def on_batch(_stats: object) -> None:
            if not first:
                first.append(time.perf_counter())

        stats = consumer.run(until_caught_up=True, on_batch=on_batch)
        ended = time.perf_counter()
    finally:
        store.close()
    return ended - started, ended - (first[0] if first else started), stats.records


def e2e(args: argparse.Namespace) -> None:
    st = stack()
    bootstrap = st.kafka.bootstrap
    n = topic_size(bootstrap, args.topic)
    variants = [v for v in ("serial", "overlap") if v in args.variants.split(",")]
    fetch = None if args.fetch == "ecst" else KAFKA_PYTHON
    rates: dict[tuple[str, str], list[float]] = {}
    steady: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for state in args.states.split(","):
                for variant in variants:
                    url, remove = state_url(state, st, Path(tmp))
                    try:
                        wall, since_first, records = run_e2e(bootstrap, args.topic, url, variant == "overlap",
                                                             args.batch_size, fetch)
                    finally:
                        remove()
                    assert records >= n, (records, n)
                    rates.setdefault((state, variant), []).append(records / wall)
                    steady.setdefault((state, variant), []).append(records / since_first)
                    print(f"round {rnd + 1} {state:<10} {variant:<8} {records / wall:>9.0f} rec/s "
                          f"(steady {records / since_first:>9.0f}) {wall:6.2f} s", flush=True)
    print(f"\n{n} records, batch size {args.batch_size}, fetch options: {args.fetch}; "
          f"medians of {args.rounds}")
    for state in args.states.split(","):
        for variant in variants:
            r, s = rates[(state, variant)], steady[(state, variant)]
            print(f"{state:<10} {variant:<8} {statistics.median(r):>9.0f} rec/s  "
                  f"steady {statistics.median(s):>9.0f}  all: {' '.join(f'{x:.0f}' for x in r)}")
        if len(variants) == 2:
            a, b = (statistics.median(rates[(state, v)]) for v in variants)
            pairs = zip(rates[(state, "serial")], rates[(state, "overlap")], strict=True)
            per_round = [o / s for s, o in pairs]
            print(f"{state:<10} overlap/serial: ratio of medians {b / a:.2f}, median of round ratios "
                  f"{statistics.median(per_round):.2f}")


def read_all(bootstrap: str, topic: str, options: dict[str, Any], batch_size: int, n: int) -> float:
    """Seconds to read `n` records of `topic` from its beginning, polling batches of `batch_size`."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_poll_records=batch_size, **options)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        started = time.perf_counter()
        seen = 0
        while seen < n:
            polled = consumer.poll(timeout_ms=1000, max_records=batch_size)
            seen += sum(len(m) for m in polled.values())
        return time.perf_counter() - started
    finally:
        consumer.close()


def fetch(args: argparse.Namespace) -> None:
    bootstrap = stack().kafka.bootstrap
    n = topic_size(bootstrap, args.topic)
    rates: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        for name, options in FETCH_VARIANTS.items():
            if args.only and name not in args.only.split(","):
                continue
            seconds = read_all(bootstrap, args.topic, options, args.batch_size, n)
            rates.setdefault(name, []).append(n / seconds)
            print(f"round {rnd + 1} {name:<40} {n / seconds:>9.0f} rec/s", flush=True)
    base = statistics.median(rates["kafka-python defaults"])
    print(f"\n{n} records, polls of {args.batch_size}; medians of {args.rounds} rounds")
    for name, r in rates.items():
        print(f"{name:<40} {statistics.median(r):>9.0f} rec/s  x{statistics.median(r) / base:.2f}  "
              f"all: {' '.join(f'{x:.0f}' for x in r)}")


def latency(args: argparse.Namespace) -> None:
    """Median delay from a producer's send to the commit of the state transaction that applied it,
    one record at a time on an idle topic, for each variant in turn."""
    bootstrap = stack().kafka.bootstrap
    variants = [v for v in ("serial", "overlap") if v in args.variants.split(",")]
    delays: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for variant in variants:
                topic = fill(bootstrap, 0, 1)
                producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
                store = StateStore(f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.db")
                consumer = Consumer(store, [topic], bootstrap_servers=bootstrap, overlap=variant == "overlap",
                                    group_id=f"bench-{uuid.uuid4().hex[:8]}", mappings_checked=True)
                sent: list[float] = []
                seen: list[float] = []  # when each batch's transaction committed (on the applying thread)

                def apply(*a: Any, real: Any = store.apply, seen: list[float] = seen, **k: Any) -> Any:
                    stats = real(*a, **k)
                    seen.append(time.perf_counter())
                    return stats

                store.apply = apply  # type: ignore[method-assign]
                stop = threading.Event()
                runner = threading.Thread(target=consumer.run, kwargs={"stop": stop})
                runner.start()
                time.sleep(5)  # joined and idle
                for i in range(args.records):
                    key, value = envelope("c", i, 1000 + i, after=row(i))
                    sent.append(time.perf_counter())
                    producer.send(topic, key=key, value=value).get(timeout=10)
                    deadline = time.monotonic() + 10
                    while len(seen) <= i and time.monotonic() < deadline:
                        time.sleep(0.001)
                    time.sleep(0.1)
                stop.set()
                runner.join()
                producer.close()
                store.close()
                ms = [(b - a) * 1000 for a, b in zip(sent, seen, strict=False)]
                delays[variant] += ms
                print(f"round {rnd + 1} {variant:<8} median {statistics.median(ms):6.1f} ms "
                      f"(max {max(ms):6.1f})", flush=True)
    for variant in variants:
        d = delays[variant]
        print(f"{variant:<8} send -> state committed: median {statistics.median(d):.1f} ms, "
              f"90th percentile {statistics.quantiles(d, n=10)[-1]:.1f} ms over {len(d)} records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fill")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--partitions", type=int, default=3)
    p = sub.add_parser("latency")
    p.add_argument("--records", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default="serial,overlap")
    for name in ("e2e", "fetch"):
        p = sub.add_parser(name)
        p.add_argument("--topic", required=True)
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--batch-size", type=int, default=2000)
        if name == "e2e":
            p.add_argument("--states", default="sqlite,postgresql")
            p.add_argument("--variants", default="serial,overlap")
            p.add_argument("--fetch", choices=("ecst", "kafka-python"), default="ecst",
                           help="the consumer's fetch options (FETCH_OPTIONS) or kafka-python's defaults")
        else:
            p.add_argument("--only", help="comma-separated names of FETCH_VARIANTS to measure (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)  # kafka-python 3 warns of its slow IO tasks
    if args.cmd == "fill":
        print(fill(stack().kafka.bootstrap, args.records, args.partitions))
    elif args.cmd == "e2e":
        e2e(args)
    elif args.cmd == "latency":
        latency(args)
    else:
        fetch(args)


if __name__ == "__main__":
    main()

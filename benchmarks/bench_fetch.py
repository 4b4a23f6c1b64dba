"""The raw Kafka fetch ceiling: records/s and CPU per 1,000 records of each client, side by side.

    .venv/bin/pip install confluent-kafka       # or: pip install -e '.[kafka-confluent]'
    .venv/bin/ecst stack up                      # the local stack (ECST_KAFKA_PORT etc. honoured)
    .venv/bin/python benchmarks/bench_fetch.py [--records 200000] [--rounds 3] [--decode]

Produces --records Debezium-shaped JSON records (the users envelope of tests/unit/consumer/
envelopes.py, schema embedded, ~2.3 KB values) once to a 3-partition topic, then reads all of
them back, assigned from the beginning, with each variant in turn (A B C A B C ...) for --rounds
rounds: kafka-python as ecst builds it (ecst.kafka.consumer with the group reader's options),
kafka-python tuned, with and without CRC checks, and confluent-kafka's `consume(num_messages)`.
Nothing is done with a record but build ecst's `Record` from it, unless --decode adds
`ecst.consumer.events.decode` on each (the whole read side). Each pass runs in a fresh worker
process and reports its wall time and its own CPU time (getrusage: every thread of the client).
Prints each variant's median records/s (from the assignment to the last record), median CPU-ms
per 1,000 records, median seconds to the first record, and the ratios to the first variant.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecst import kafka  # noqa: E402
from ecst.consumer.events import Record, decode  # noqa: E402
from ecst.settings import Settings  # noqa: E402
from tests.unit.consumer.envelopes import envelope, row  # noqa: E402

PARTITIONS = 3
BATCH = 2000  # the consumer's default batch_size

# kafka-python, as the group reader builds it (ecst/consumer/group.py), less the group
KP_ECST: dict[str, object] = {"auto_offset_reset": "earliest", "max_poll_records": BATCH}
KP_TUNED: dict[str, object] = {**KP_ECST, "fetch_max_bytes": 64 * 1024 * 1024,
                               "max_partition_fetch_bytes": 16 * 1024 * 1024, "max_poll_records": 10000}
VARIANTS = {
    "kafka-python (ecst today)": ("kafka-python", KP_ECST),
    "kafka-python no CRC check": ("kafka-python", {**KP_ECST, "check_crcs": False}),
    "kafka-python tuned": ("kafka-python", KP_TUNED),
    "kafka-python tuned no CRC": ("kafka-python", {**KP_TUNED, "check_crcs": False}),
    "confluent-kafka consume(2000)": ("confluent", {}),
}


def produce(bootstrap: str, topic: str, n: int) -> None:
    kafka.ensure_topic(bootstrap, topic, partitions=PARTITIONS)
    records = [envelope("u", i, 1000 + i, after=row(i)) for i in range(n)]
    try:
        from confluent_kafka import Producer  # faster to load the topic; the read is what is measured
    except ImportError:
        producer = kafka.producer(bootstrap, linger_ms=20, batch_size=1 << 20)
        for i, (key, value) in enumerate(records):
            producer.send(topic, key=key, value=value, partition=i % PARTITIONS)
        producer.flush()
        producer.close()
        return
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    for i, (key, value) in enumerate(records):
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if p.flush(60):
        raise SystemExit("produce: records left unsent")


def read_kafka_python(bootstrap: str, topic: str, n: int, options: dict,
                      with_decode: bool) -> tuple[int, float]:
    from kafka import TopicPartition

    c = kafka.consumer(bootstrap, group_id=None, **options)
    c.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    c.seek_to_beginning()
    got, first = 0, 0.0
    while got < n:
        for messages in c.poll(timeout_ms=1000, max_records=options["max_poll_records"]).values():
            for m in messages:
                r = Record(m.topic, m.partition, m.offset, m.key, m.value)
                if with_decode:
                    decode(r)
            got += len(messages)
            first = first or time.perf_counter()
    c.close()
    return got, first


def read_confluent(bootstrap: str, topic: str, n: int, options: dict, with_decode: bool) -> tuple[int, float]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-fetch", "enable.auto.commit": False,
                  **options})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got, first = 0, 0.0
    while got < n:
        for m in c.consume(num_messages=BATCH, timeout=1.0):
            if m.error():
                raise SystemExit(f"confluent: {m.error()}")
            # a fetched message always has its topic, partition and offset
            r = Record(m.topic(), m.partition(), m.offset(), m.key(), m.value())  # type: ignore[arg-type]
            if with_decode:
                decode(r)
            got += 1
            first = first or time.perf_counter()
    c.close()
    return got, first


def worker(bootstrap: str, topic: str, n: int, variant: str, with_decode: bool) -> dict[str, float]:
    client, options = VARIANTS[variant]
    read = read_confluent if client == "confluent" else read_kafka_python
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    got, first = read(bootstrap, topic, n, options, with_decode)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"records": got, "wall_s": wall, "cpu_s": cpu, "first_s": first - started}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decode", action="store_true", help="decode each record too (the whole read side)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--topic", help="reuse a topic already holding --records records")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    bootstrap = Settings.from_env().effective_bootstrap_servers
    if args.worker:
        print(json.dumps(worker(bootstrap, args.topic, args.records, args.worker, args.decode)))
        return
    variants = [v.strip() for v in args.variants.split(",")]
    topic = args.topic or f"bench-fetch-{uuid.uuid4().hex[:8]}"
    if not args.topic:
        started = time.perf_counter()
        produce(bootstrap, topic, args.records)
        print(f"produced {args.records} records to {topic} in {time.perf_counter() - started:.1f} s",
              flush=True)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for v in variants:
            cmd = [sys.executable, __file__, "--worker", v, "--topic", topic, "--records", str(args.records)]
            out = subprocess.run(cmd + (["--decode"] if args.decode else []), check=True,
                                 capture_output=True, text=True, env=os.environ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            results[v].append(r)
            print(f"round {round_ + 1} {v:32} {r['records'] / r['wall_s']:9,.0f} rec/s "
                  f"{1e6 * r['cpu_s'] / r['records']:7.1f} CPU-ms/1k, "
                  f"first record after {r['first_s']:.2f} s", flush=True)
    base = None
    print(f"\n{'decode included' if args.decode else 'fetch only'}, {args.records} records, "
          f"{args.rounds} rounds (medians)")
    print(f"{'variant':32} {'records/s':>10} {'CPU-ms/1k':>10} {'1st rec s':>10} {'rate ratio':>10} "
          f"{'CPU ratio':>10}")
    for v in variants:
        rate = statistics.median(r["records"] / r["wall_s"] for r in results[v])
        cpu = statistics.median(1e6 * r["cpu_s"] / r["records"] for r in results[v])
        first = statistics.median(r["first_s"] for r in results[v])
        base = base or (rate, cpu)
        print(f"{v:32} {rate:10,.0f} {cpu:10.1f} {first:10.2f} {rate / base[0]:10.2f} {cpu / base[1]:10.2f}")


if __name__ == "__main__":
    main()

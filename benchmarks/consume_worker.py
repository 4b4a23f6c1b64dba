"""One consumer run in its own process, for the harness: prints `started` once imported, then
one JSON line when done: wall and CPU seconds of the run, peak RSS of the process, records.

    python -m benchmarks.consume_worker --bootstrap HOST:PORT --topic T --state URL \
        --group G [--until caught-up|ready] [--batch-size 2000] [--kafka-client kafka-python|confluent]
        [--decode-in-python]

The clock starts when `Consumer.run` is called (after imports and opening the state store) and
includes joining the group; `ready_at` is the wall-clock time the run ended, for the harness's
end-to-end figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries that
    over exec from the forked parent, so a child of a big harness would report the harness's."""
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--until", choices=["caught-up", "ready"], default="caught-up")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--kafka-client", choices=["kafka-python", "confluent"], default="kafka-python")
    parser.add_argument("--decode-in-python", action="store_true",
                        help="decode_in_database: false (a PostgreSQL state then decodes nothing itself)")
    args = parser.parse_args()

    from ecst.consumer.config import ConsumerConfig
    from ecst.consumer.runner import Consumer
    from ecst.consumer.store import StateStore

    store = StateStore(args.state)
    consumer = Consumer(store, [args.topic], bootstrap_servers=args.bootstrap, group_id=args.group,
                        batch_size=args.batch_size, config=ConsumerConfig(kafka_client=args.kafka_client,
                                              decode_in_database=not args.decode_in_python))
    print("started", flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    stats = consumer.run(until_caught_up=args.until == "caught-up", until_ready=args.until == "ready",
                         topic_timeout_s=900.0)
    wall = time.perf_counter() - started
    ready_at = time.time()
    end = resource.getrusage(resource.RUSAGE_SELF)
    store.close()
    print(json.dumps({
        "wall_s": wall, "ready_at": ready_at, "records": stats.records,
        "cpu_s": (end.ru_utime - usage.ru_utime) + (end.ru_stime - usage.ru_stime),
        "peak_rss_mb": peak_rss_mb(),
    }), flush=True)


if __name__ == "__main__":
    main()

"""Topics compressed with each codec a Kafka producer can use (gzip, snappy, lz4, zstd), read by
the consumer with each client into an exact copy, on the real broker: ecst installs every codec's
package that kafka-python needs (pyproject.toml), so a producer's choice of codec never stops it."""

from __future__ import annotations

import random
import uuid

import pytest
from kafka import KafkaProducer
from kafka.admin import NewTopic

from ecst import kafka
from ecst.consumer.config import ConsumerConfig
from ecst.consumer.events import Record, decode
from ecst.consumer.runner import Consumer
from ecst.consumer.store import StateStore
from tests.unit.consumer.envelopes import envelope, row

CODECS = ("gzip", "snappy", "lz4", "zstd")
PARTITIONS = 3


def _records(seed: int) -> list[tuple[bytes, bytes | None]]:
    """Snapshot reads of 200 users, then updates (NULLs among them) and deletes with their
    tombstones, in commit order: (key, value) pairs, the value None for a tombstone."""
    rnd = random.Random(seed)
    out = [envelope("r", i, 100, after=row(i), snapshot="true") for i in range(200)]
    lsn = 1000
    for _ in range(300):
        i, lsn = rnd.randrange(220), lsn + 10
        if rnd.random() < 0.15:
            key, value = envelope("d", i, lsn, before={"id": i})
            out += [(key, value), (key, None)]
            continue
        after = row(i, email=rnd.choice([None, f"new{lsn}@example.com"]),
                    balance=rnd.choice(["0.00", "-3.07"]), active=rnd.choice([None, False]),
                    bio=rnd.choice([None, "", "é" * rnd.randrange(40)]))
        if rnd.random() < 0.3:
            after["balance"] = None
        out.append(envelope("u" if i < 200 else "c", i, lsn, after=after))
    return out


def _produce(bootstrap: str, topic: str, codec: str, records: list[tuple[bytes, bytes | None]]) -> None:
    admin = kafka.admin(bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=-1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50)
    for key, value in records:  # one key, one partition: the key's changes stay in order
        producer.send(topic, key=key, value=value, partition=_partition(key))
    producer.flush()
    producer.close()


def _partition(key: bytes) -> int:
    return sum(key) % PARTITIONS


def _on_disk(bootstrap: str, topic: str) -> int:
    admin = kafka.admin(bootstrap)
    try:
        [broker] = admin.describe_log_dirs([topic])
    finally:
        admin.close()
    return sum(p["partition_size"] for d in broker["log_dirs"] for t in d["topics"]
               for p in t["partitions"] if t["name"] == topic)


def _expected(topic: str, records: list[tuple[bytes, bytes | None]], url: str) -> StateStore:
    """The same records decoded and applied directly, one batch per partition, no Kafka."""
    store = StateStore(url)
    for partition in range(PARTITIONS):
        mine = [(k, v) for k, v in records if _partition(k) == partition]
        events = [e for offset, (k, v) in enumerate(mine)
                  if (e := decode(Record(topic, partition, offset, k, v))) is not None]
        store.apply(events, {(topic, partition): len(mine)})
    return store


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
@pytest.mark.parametrize("codec", CODECS)
def test_a_topic_compressed_with_any_codec_is_read_into_an_exact_copy(stack, tmp_path, codec, client):
    topic = f"codec{uuid.uuid4().hex[:8]}.public.users"
    records = _records(seed=CODECS.index(codec))
    _produce(stack.bootstrap, topic, codec, records)
    raw = sum(len(k) + len(v or b"") for k, v in records)
    assert _on_disk(stack.bootstrap, topic) < raw / 3, f"the topic's batches are not {codec}-compressed"

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    expected = _expected(topic, records, f"sqlite:///{tmp_path / 'expected.db'}")
    try:
        consumer = Consumer(store, [topic], bootstrap_servers=stack.bootstrap, group_id=f"g-{topic}",
                            config=ConsumerConfig(kafka_client=client))
        stats = consumer.run(until_caught_up=True, topic_timeout_s=30)
        assert stats.records == len(records)
        got, want = store.rows("users"), expected.rows("users")
        assert want, "the records leave no row: the comparison would prove nothing"
        key = lambda r: r["id"]  # noqa: E731
        assert sorted(got, key=key) == sorted(want, key=key)  # every column of every row, NULLs included
        assert store.stored_offsets() == expected.stored_offsets()
    finally:
        store.close()
        expected.close()

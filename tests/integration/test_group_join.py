"""The group reader's join of a consumer group on the real broker (ecst.consumer.group): a join that
kafka-python 3.0.12 would leave unfinished for good (the leader re-joining on a metadata change while
its polls time out, a revocation taking a while) ends with every partition assigned."""

import time
import uuid

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewPartitions, NewTopic

from ecst import kafka
from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.group import GroupReader, joined
from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import StoreHealth
from ecst.consumer.store import StateStore


def test_a_leader_rejoining_on_new_partitions_while_its_polls_time_out_gets_them_all(stack, tmp_path):
    topic = f"join-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
    for _ in range(5):
        producer.send(topic, b"x")
    producer.flush()
    producer.close()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    config = ConsumerConfig(topics=(TopicMapping(topic),), group_id=f"g-{topic}")
    # a revocation that waits for a batch being applied; polls as short as a loop with a batch in flight
    reader = GroupReader(kafka.KafkaSettings(stack.bootstrap), config, store, StoreHealth(Metrics()),
                         client_id="t", poll_timeout_ms=5, alive=lambda: None,
                         before_rebalance=lambda: time.sleep(0.3), join_stuck_s=3600,
                         kafka_options={"metadata_max_age_ms": 500})  # new partitions seen at once
    try:
        reader.subscribe()
        assert _poll_until(reader, 1, 60), "the first join did not assign the partition"
        admin.create_partitions({topic: NewPartitions(3)})  # the leader re-joins on the new metadata
        assert _poll_until(reader, 3, 60), (
            f"join unfinished: {reader.consumer._coordinator.state}, assigned "
            f"{sorted(tp.partition for tp in reader.consumer.assignment())}")
        assert joined(reader.consumer) and reader.replaced == 0  # finished by itself, not replaced
    finally:
        reader.close()
        store.close()
        admin.delete_topics([topic])
        admin.close()


def _poll_until(reader: GroupReader, partitions: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reader.poll()
        if len(reader.consumer.assignment()) == partitions and joined(reader.consumer):
            return True
        time.sleep(0.05)
    return False

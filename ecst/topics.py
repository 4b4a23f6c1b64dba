"""Kafka topics ecst itself writes to (the dead-letter topic, the Kafka signal channel)."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError


def ensure_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    """Create `topic` with the broker's default replication unless it exists already."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1)])
    except TopicAlreadyExistsError:
        pass  # created meanwhile by another process
    finally:
        admin.close()

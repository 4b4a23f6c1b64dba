"""Kafka topics ecst itself writes to (the dead-letter topic, the Kafka signal channel)."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError


def ensure_topic(bootstrap: str, topic: str, partitions: int = 1,
                 configs: dict[str, str] | None = None) -> None:
    """Create `topic` with the broker's default replication (and `configs`) unless it exists."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1,
                                          topic_configs=configs or {})])
    except TopicAlreadyExistsError:
        pass  # created meanwhile by another process
    finally:
        admin.close()

"""The consumer loop's side of Kafka, on the client the settings choose: `GroupReader`
(kafka-python, the default) or `ConfluentGroupReader` (confluent-kafka, `kafka.client: confluent`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from ecst import kafka
from ecst.consumer.config import ConsumerConfig
from ecst.consumer.group import GroupReader, Offsets
from ecst.consumer.group_confluent import ConfluentGroupReader
from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import StoreHealth
from ecst.consumer.store import StateStore


class Reader(Protocol):
    """What the consumer loop asks of its side of Kafka: `GroupReader` (kafka-python) or
    `ecst.consumer.group_confluent.ConfluentGroupReader` (confluent-kafka)."""

    def find_topics(self) -> tuple[list[Any], list[str]]: ...
    def offsets_at_start(self, partitions: list[Any]) -> tuple[Offsets, Offsets]: ...
    def subscribe(self) -> None: ...
    def poll(self, timeout_ms: int | None = None) -> list[Any]: ...
    def reposition(self, stored: Offsets | None = None) -> None: ...
    def end_offsets(self, topic: str) -> dict[int, int]: ...
    def positions(self) -> Offsets: ...
    def commit(self, next_offsets: Offsets) -> None: ...
    def confirm_membership(self) -> None: ...
    def observe(self, metrics: Metrics) -> None: ...
    def check_topics(self, metrics: Metrics) -> None: ...
    def idle_paused(self, seconds: float, stop: threading.Event) -> None: ...
    def resume(self, stored: Offsets) -> None: ...
    def wait_for_kafka(self, stop: threading.Event, idle: Callable[[float], None]) -> bool: ...
    def close(self) -> None: ...


def open_reader(settings: kafka.KafkaSettings, config: ConsumerConfig, store: StateStore,
                health: StoreHealth, *, client_id: str, poll_timeout_ms: int,
                alive: Callable[[], None], before_rebalance: Callable[[], None] | None = None,
                after_assignment: Callable[[], None] | None = None,
                kafka_options: dict[str, Any] | None = None) -> Reader:
    """The group reader of the client `settings.client` names (see `GroupReader` for the
    rebalance hooks; `kafka_options` are kafka-python's)."""
    reader = ConfluentGroupReader if settings.client == "confluent" else GroupReader
    return reader(settings, config, store, health, client_id=client_id, poll_timeout_ms=poll_timeout_ms,
                  alive=alive, before_rebalance=before_rebalance, after_assignment=after_assignment,
                  kafka_options=kafka_options)

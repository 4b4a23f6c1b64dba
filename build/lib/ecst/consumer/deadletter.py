"""The dead-letter topic: records that cannot be decoded or applied, sent with headers that
name the error, the stage and where the record came from, and confirmed before moving on."""

from __future__ import annotations

import logging

from kafka import KafkaProducer
from kafka.errors import KafkaError

from ecst import kafka
from ecst.consumer.events import Record
from ecst.consumer.metrics import Metrics
from ecst.exceptions import ConfigError, StackError

log = logging.getLogger(__name__)
DLQ_MAX_BYTES = 16 * 1024 * 1024  # the dead-letter topic's max.message.bytes and the producer's
DLQ_MAX_VALUE = DLQ_MAX_BYTES - 1024 * 1024  # a larger value is dropped (its headers name it)


def where(r: Record) -> str:
    """`topic[partition]@offset`, how log lines and errors name a record."""
    return f"{r.topic}[{r.partition}]@{r.offset}"


def headers(record: Record, error: str, stage: str) -> list[tuple[str, bytes]]:
    """The headers a dead-lettered record carries (`ecst.error`, `ecst.stage`, its source)."""
    return [
        ("ecst.error", error.encode()),
        ("ecst.stage", stage.encode()),
        ("ecst.source.topic", record.topic.encode()),
        ("ecst.source.partition", str(record.partition).encode()),
        ("ecst.source.offset", str(record.offset).encode()),
    ]


class DeadLetters:
    """Sends rejected records to one dead-letter topic (created on first use); None: the consumer
    has none, and nothing may be sent."""

    def __init__(self, settings: kafka.KafkaSettings, topic: str | None, metrics: Metrics,
                 client_id: str = "ecst-consumer") -> None:
        self.settings = settings
        self.topic = topic
        self.metrics = metrics
        self.client_id = client_id
        self._producer: KafkaProducer | None = None

    def send(self, rejected: list[tuple[Record, str]], stage: str) -> None:
        """Send each (record, error) and wait until Kafka has every one of them, so that the
        offsets that skip them move on only once they are durable. A retriable Kafka error is
        raised as is (the loop waits for Kafka, then reads the batch again)."""
        if self.topic is None:
            raise ConfigError("no dead_letter_topic is configured: rejected records cannot be dead-lettered")
        if self._producer is None:
            kafka.ensure_topic(self.settings, self.topic, configs={"max.message.bytes": str(DLQ_MAX_BYTES)})
            self._producer = kafka.producer(self.settings, client_id=f"{self.client_id}-dlq",
                                            max_request_size=DLQ_MAX_BYTES)
        sent = []
        for record, error in rejected:
            extra = headers(record, error, stage)
            value = record.value
            if value is not None and len(value) > DLQ_MAX_VALUE:  # the source offset finds it
                extra.append(("ecst.value.dropped", str(len(value)).encode()))
                value = None
            sent.append((record, self._producer.send(self.topic, key=record.key, value=value,
                                                     headers=extra)))
            log.error("dead-lettered %s (%s): %s", where(record), stage, error)
            self.metrics.inc("ecst_dead_lettered_total", stage=stage)
        self._producer.flush(timeout=30)
        for record, future in sent:
            try:
                future.get(timeout=30)
            except KafkaError as exc:
                if exc.retriable:
                    raise
                raise StackError(f"could not dead-letter {where(record)} to {self.topic}: {exc}; the "
                                 "state is unchanged from the last good batch") from exc

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None

"""The one Kafka adapter: every consumer, producer and admin client ecst builds comes from here.

Clients are built from one `KafkaSettings`: bootstrap servers, the consumer's client library and
the security settings (`ecst.kafka_security.KafkaSecurity`: TLS, SASL), so that every client gets
the same. kafka-python's errors at construction, and in the few calls made here, become ecst's
`KafkaUnavailableError` (`KafkaAuthenticationError` when the brokers refuse the credentials or the
TLS handshake fails), whose message names the servers. The consumer's group reader may use
confluent-kafka instead (`client="confluent"`, the optional extra `ecst[kafka-confluent]`: see
`confluent_options` and ecst/consumer/group_confluent.py); everything else stays on kafka-python.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MetadataEmptyBrokerList,
    NodeNotReadyError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
    UnsupportedCodecError,
)

from ecst.exceptions import ConfigError, KafkaAuthenticationError, KafkaCodecError, KafkaUnavailableError
from ecst.kafka_login import login_failure
from ecst.kafka_security import KafkaSecurity

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> offset
REQUEST_TIMEOUT_MS = 30000
CLIENTS = ("kafka-python", "confluent")  # the group reader's client library; kafka-python is the default
CONFLUENT_MISSING = ("the Kafka client 'confluent' needs confluent-kafka, which is not installed: "
                     "pip install 'ecst[kafka-confluent]' (or choose kafka.client: kafka-python)")


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the Kafka cluster; what every client shares."""

    bootstrap_servers: str
    client: str = "kafka-python"  # the consumer's group reader: kafka-python or confluent
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def __post_init__(self) -> None:
        check_client(self.client, "kafka.client")
        self.security.check()
        for server in self.servers or [""]:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(
                    f"bootstrap servers {self.bootstrap_servers!r}: {server!r} is not host:port; use "
                    "host:port[,host:port] (--bootstrap-servers, kafka.bootstrap_servers or "
                    "ECST_BOOTSTRAP_SERVERS)")

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def client_options(self) -> dict[str, Any]:
        """Options every kafka-python client gets: the servers and the security settings."""
        return {"bootstrap_servers": self.servers, "request_timeout_ms": REQUEST_TIMEOUT_MS,
                **self.security.kafka_python_options()}

    def confluent_options(self) -> dict[str, Any]:
        """The same, in librdkafka's words, for a confluent-kafka client."""
        return {"bootstrap.servers": ",".join(self.servers), "socket.timeout.ms": REQUEST_TIMEOUT_MS,
                **self.security.confluent_options()}

    def describe(self) -> str:
        """`host:port` (and how ecst authenticates, when not PLAINTEXT), for messages."""
        if self.security.protocol == "PLAINTEXT":
            return self.bootstrap_servers
        return f"{self.bootstrap_servers} ({self.security.describe()})"


def check_client(value: Any, name: str) -> str:
    """One of CLIENTS, else a ConfigError naming `name` (a key, an option or a variable)."""
    if value not in CLIENTS:
        raise ConfigError(f"{name}: {value!r} is not a Kafka client: use {' or '.join(CLIENTS)} "
                          "(kafka.client, --kafka-client or ECST_KAFKA_CLIENT)")
    return str(value)


def require_client(settings: KafkaSettings) -> None:
    """A ConfigError now if the chosen client's library is not installed."""
    if settings.client == "confluent":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError as exc:
            raise ConfigError(CONFLUENT_MISSING) from exc


def as_settings(kafka: KafkaSettings | str, client: str | None = None,
                security: KafkaSecurity | None = None) -> KafkaSettings:
    """Accept a `KafkaSettings` or a bootstrap string (`host:port[,host:port]`); `client` and
    `security`, if given, replace the settings' own."""
    settings = kafka if isinstance(kafka, KafkaSettings) else KafkaSettings(kafka)
    changes: dict[str, Any] = {}
    if client is not None and client != settings.client:
        changes["client"] = client
    if security is not None and security != settings.security:
        changes["security"] = security
    return replace(settings, **changes) if changes else settings


# kafka-python decompresses a record batch with these packages (gzip is Python's own); ecst
# depends on all of them, so that it reads any topic a Kafka producer can write
CODEC_PACKAGES = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}


def codec_error(exc: UnsupportedCodecError) -> KafkaCodecError:
    """The one-line error for a record batch kafka-python cannot decompress here."""
    named = next((f"`{package}`" for codec, package in CODEC_PACKAGES.items() if codec in str(exc)),
                 "the codec's package")
    return KafkaCodecError(
        f"a record batch read from Kafka is compressed with a codec kafka-python cannot decompress here "
        f"({exc}): install {named} beside ecst (`pip install ecst` installs every codec's package), or "
        "read with kafka.client: confluent; nothing of the batch was applied")


@contextmanager
def decompressing() -> Iterator[None]:
    """Turn kafka-python's UnsupportedCodecError, raised by a poll that met a record batch whose
    codec it cannot decompress, into KafkaCodecError (see `codec_error`)."""
    try:
        yield
    except UnsupportedCodecError as exc:
        raise codec_error(exc) from exc


@contextmanager
def reaching(kafka: KafkaSettings, doing: str = "connect to") -> Iterator[None]:
    """Turn kafka-python's errors inside the block into one `KafkaUnavailableError` line (or a
    `KafkaAuthenticationError`, a `KafkaCodecError`, when that is what they mean)."""
    try:
        yield
    except UnsupportedCodecError as exc:
        raise codec_error(exc) from exc
    except KafkaError as exc:
        refused = auth_error(kafka, exc)
        if refused is not None:
            raise refused from exc
        raise KafkaUnavailableError(
            f"couldn't {doing} Kafka at {kafka.describe()}: {exc} "
            "(is the stack up? `ecst stack status`)") from exc


def auth_error(kafka: KafkaSettings, exc: BaseException) -> KafkaAuthenticationError | None:
    """A KafkaAuthenticationError saying what to fix, when `exc` is the brokers refusing the
    credentials or the TLS handshake failing; else None. kafka-python retries a refused login
    until its timeout and then says only that it could not bootstrap, so when TLS or SASL is on,
    such a failure is diagnosed by one more attempt (`login_failure`)."""
    if isinstance(exc, SaslAuthenticationFailedError):
        return refused(kafka, exc)
    if kafka.security.protocol == "PLAINTEXT" or not isinstance(
            exc, (KafkaTimeoutError, KafkaConnectionError, NodeNotReadyError, MetadataEmptyBrokerList)):
        return None
    cause = login_failure(kafka.servers[0], kafka.security)
    return None if cause is None else refused(kafka, cause)


def refused(kafka: KafkaSettings, cause: BaseException) -> KafkaAuthenticationError:
    """The one line for a refused login (`cause`: a SASL failure or an ssl.SSLError)."""
    sec = kafka.security
    if isinstance(cause, ssl.SSLError):
        why = " ".join(str(getattr(cause, "verify_message", "") or cause.reason or cause).split())
        hint = ("check kafka.ssl.cafile (the CA that signed the brokers' certificates"
                + (", none given: the system's CAs are used" if sec.cafile is None else "")
                + ") and kafka.ssl.check_hostname" if isinstance(cause, ssl.SSLCertVerificationError)
                else "check kafka.ssl.* (CA, client certificate and key) and that this listener speaks TLS")
        return KafkaAuthenticationError(f"TLS handshake with Kafka at {kafka.bootstrap_servers} failed "
                                        f"({why}): {hint}")
    why = " ".join(str(cause).split()).removeprefix("[Error 58] ").removeprefix(
        "SaslAuthenticationFailedError: ")
    return KafkaAuthenticationError(
        f"Kafka at {kafka.bootstrap_servers} refused SASL authentication for user {sec.username!r} "
        f"({sec.mechanism}; the broker says: {why}): check kafka.sasl.username and kafka.sasl.password "
        "(ECST_KAFKA_SASL_USERNAME, ECST_KAFKA_SASL_PASSWORD) and kafka.sasl.mechanism")


def check_login(kafka: KafkaSettings | str) -> None:
    """With TLS or SASL on: log in to the first broker once, and raise the one-line
    KafkaAuthenticationError now if that is refused (kafka-python would retry until its timeout).
    Nothing is raised when no broker answers: the clients report that as they always do."""
    settings = as_settings(kafka)
    if settings.security.protocol == "PLAINTEXT":
        return
    cause = login_failure(settings.servers[0], settings.security)
    if cause is not None:
        raise refused(settings, cause)


def consumer(kafka: KafkaSettings | str, **options: Any) -> KafkaConsumer:
    """A KafkaConsumer; `options` are kafka-python's (group_id, max_poll_records, ...)."""
    settings = as_settings(kafka)
    with reaching(settings):
        return KafkaConsumer(**{"enable_auto_commit": False, **settings.client_options(), **options})


def producer(kafka: KafkaSettings | str, **options: Any) -> KafkaProducer:
    """A KafkaProducer that waits for every in-sync replica (`acks=all`) unless told otherwise."""
    settings = as_settings(kafka)
    with reaching(settings):
        return KafkaProducer(**{"acks": "all", **settings.client_options(), **options})


def admin(kafka: KafkaSettings | str, **options: Any) -> KafkaAdminClient:
    """A KafkaAdminClient."""
    settings = as_settings(kafka)
    with reaching(settings):
        return KafkaAdminClient(**{**settings.client_options(), **options})


def ensure_topic(kafka: KafkaSettings | str, topic: str, partitions: int = 1,
                 configs: dict[str, str] | None = None) -> None:
    """Create `topic` with the broker's default replication (and `configs`) unless it exists."""
    settings = as_settings(kafka)
    client = admin(settings)
    try:
        with reaching(settings, f"create topic {topic} on"):
            if topic not in client.list_topics():
                client.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1,
                                               topic_configs=configs or {})])
    except KafkaUnavailableError as exc:
        if not isinstance(exc.__cause__, TopicAlreadyExistsError):
            raise  # otherwise: created meanwhile by another process
    finally:
        client.close()


def topic_offsets(kafka: KafkaSettings | str, topics: list[str]) -> tuple[Offsets, Offsets]:
    """(beginning, end) offsets of every partition of `topics` (none for a missing topic)."""
    settings = as_settings(kafka)
    probe = consumer(settings)
    try:
        with reaching(settings, "read offsets from"):
            tps = [TopicPartition(t, p) for t in topics for p in sorted(probe.partitions_for_topic(t) or ())]
            if not tps:
                return {}, {}
            begins, ends = probe.beginning_offsets(tps), probe.end_offsets(tps)
        return ({(tp.topic, tp.partition): o for tp, o in begins.items()},
                {(tp.topic, tp.partition): o for tp, o in ends.items()})
    finally:
        probe.close()

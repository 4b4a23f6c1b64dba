"""The consumer's YAML config: where to read, where to write, and how source maps to state.

    kafka:
      bootstrap_servers: ${ECST_BOOTSTRAP_SERVERS:-127.0.0.1:19092}
      group_id: users-service
      group_instance_id: users-0   # static membership (default: <hostname>-<group_id>; "" for none)
      client: kafka-python         # or confluent: pip install 'ecst[kafka-confluent]' (faster reads)
      security_protocol: SASL_SSL  # TLS and SASL (ecst/kafka_security.py): every Kafka client gets them
      sasl: {mechanism: SCRAM-SHA-512, username: users-service, password: ${KAFKA_PASSWORD}}
      ssl: {cafile: /etc/ecst/kafka-ca.crt}
    state:
      url: sqlite:///users-state.db
    topics:
      - topic: producer.public.users
        table: users                # state table (default: the source table's name)
        tombstones: delete          # a Kafka tombstone deletes its key (default); or `ignore`
        key: [id]                   # source columns of the state key (default: the record key)
        columns:                    # keep only these, source: state name (default: mirror all)
          id: id
          email: email
          full_name: name
    dead_letter_topic: ecst.dlq.users-service
    readiness: snapshot             # snapshot | caught-up | always
    overlap: auto                   # poll the next batch while one is applied: auto = PostgreSQL only
    decode_in_database: true        # a PostgreSQL state decodes the columns it can itself
    http: {host: 127.0.0.1, port: 8080}

`${VAR}` / `${VAR:-default}` are read from the environment. Every key is checked when the file
is loaded; a mistake names the file and the key (the CLI checks its options the same way).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecst.connectors.definition import interpolate
from ecst.consumer.types import DEFAULT_PLACEHOLDER
from ecst.exceptions import ConfigError
from ecst.kafka import check_client
from ecst.kafka_security import KafkaSecurity, from_values
from ecst.settings import Secret
from ecst.yamlfile import read_yaml

READINESS = ("snapshot", "caught-up", "always")
DEFAULT_TOPIC = "producer.public.users"  # what connectors/users.yaml writes
# A batch is held in memory and written in one transaction: beyond this, memory grows and a
# rejected batch redoes more work for no gain (the per-batch overhead is already amortised).
MAX_BATCH_SIZE = 100_000
_HOST = re.compile(r"[A-Za-z0-9._:%-]+")  # a host name, an IPv4 or IPv6 address; no scheme, no port
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")  # Kafka's rule for group.instance.id


@dataclass(frozen=True)
class TopicMapping:
    """How one Debezium topic lands in the state store."""

    topic: str
    table: str | None = None
    key: tuple[str, ...] | None = None
    columns: dict[str, str] | None = None  # source column -> state column; None mirrors all
    # "delete": a Kafka tombstone deletes its key, in offset order. Compaction removes a delete event
    # once its tombstone follows it, so a consumer that lags behind the log cleaner may see only the
    # tombstone; "ignore" would then keep a deleted row.
    tombstones: str = "delete"

    @property
    def mirrors(self) -> bool:
        return self.table is None and self.key is None and self.columns is None


@dataclass(frozen=True)
class ConsumerConfig:
    """Everything `ecst consume` needs; CLI options override the file."""

    topics: tuple[TopicMapping, ...] = (TopicMapping(DEFAULT_TOPIC),)
    bootstrap_servers: str | None = None
    group_id: str = "ecst-consumer"
    # Kafka static membership (KIP-345): None lets `ecst consume` derive one (default_instance_id),
    # "" means a dynamic member. The library's Consumer joins as a dynamic member unless set.
    group_instance_id: str | None = None
    # The group reader's client library (ecst.kafka.CLIENTS); None: the KafkaSettings' (kafka-python)
    kafka_client: str | None = None
    # TLS and SASL (kafka.security_protocol, kafka.sasl.*, kafka.ssl.*); None: PLAINTEXT
    kafka_security: KafkaSecurity | None = None
    state_url: Secret = field(default_factory=lambda: Secret("sqlite:///ecst-state.db"))
    batch_size: int = 2000
    dead_letter_topic: str | None = None
    fail_fast: bool = False
    placeholder: str = DEFAULT_PLACEHOLDER
    tombstone_retention_hours: float = 168.0
    readiness: str = "snapshot"
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    # Poll and decode the next batch while this one is applied (docs/consumer.md, "Overlapped
    # stages"); False: one stage after the other; None (`auto`): overlap for a PostgreSQL state only.
    overlap: bool | None = None
    # A PostgreSQL state decodes the columns of the rows it can itself (docs/consumer.md,
    # "Decoding in the database"); False: every row is decoded in Python. Other states: no effect.
    decode_in_database: bool = True

    def mapping(self, topic: str) -> TopicMapping:
        for m in self.topics:
            if m.topic == topic:
                return m
        return TopicMapping(topic)

    def with_(self, **changes: Any) -> ConsumerConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def check_batch_size(value: Any, name: str) -> int:
    """A batch size from 1 to MAX_BATCH_SIZE, else a ConfigError naming `name` (a key or an option)."""
    if not _is_int(value) or not 1 <= value <= MAX_BATCH_SIZE:
        raise ConfigError(f"{name}: {value!r} is not a batch size: use a whole number of records from 1 to "
                          f"{MAX_BATCH_SIZE} (each batch is held in memory and applied in one transaction)")
    return value


def check_port(value: Any, name: str) -> int:
    """A TCP port from 1 to 65535, else a ConfigError naming `name`."""
    if not _is_int(value) or not 1 <= value <= 65535:
        raise ConfigError(f"{name}: {value!r} is not a TCP port: use a number from 1 to 65535")
    return value


def check_host(value: Any, name: str) -> str:
    """An address to bind (a host name or an IP address; 0.0.0.0 for every interface), else a
    ConfigError naming `name`."""
    host = value[1:-1] if isinstance(value, str) and value[:1] == "[" and value[-1:] == "]" else value
    if not isinstance(host, str) or not _HOST.fullmatch(host) or (":" in host and not _is_ipv6(host)):
        raise ConfigError(f"{name}: {value!r} is not an address to bind: use a host name or an IP address "
                          "(127.0.0.1: this machine only; 0.0.0.0: every interface, as in a container)")
    return host


def check_retention(value: Any, name: str) -> float:
    """A finite number of hours >= 0, else a ConfigError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise ConfigError(f"{name}: {value!r} is not a retention: use a number of hours >= 0 (delete "
                          "tombstones younger than this are kept; cover the longest replay you run)")
    return value


def check_instance_id(value: Any, name: str) -> str:
    """A Kafka group instance id (letters, digits, '.', '_', '-'; at most 249), or "" for none."""
    if not isinstance(value, str) or (value and (not _INSTANCE_ID.fullmatch(value)
                                                 or value in (".", ".."))):
        raise ConfigError(f"{name}: {value!r} is not a group instance id: use up to 249 letters, digits, "
                          "'.', '_' or '-', unique to each consumer process of the group (\"\" for a "
                          "dynamic member)")
    return value


def default_instance_id(group_id: str, hostname: str | None = None) -> str:
    """`<hostname>-<group_id>` in the characters Kafka allows: stable across restarts of a
    service on one host (or a StatefulSet's pod), distinct between hosts."""
    raw = f"{hostname or socket.gethostname()}-{group_id}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", raw)[:249]


def check_config(config: ConsumerConfig) -> ConsumerConfig:
    """Check the numbers and ids of a config built in Python (named by their YAML keys)."""
    check_batch_size(config.batch_size, "batch_size")
    check_retention(config.tombstone_retention_hours, "tombstone_retention_hours")
    if config.http_port is not None:
        check_port(config.http_port, "http.port")
    if config.group_instance_id is not None:
        check_instance_id(config.group_instance_id, "kafka.group_instance_id")
    if config.kafka_client is not None:
        check_client(config.kafka_client, "kafka.client")
    return config


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).version == 6
    except ValueError:
        return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TOP = {"kafka", "state", "topics", "dead_letter_topic", "fail_fast", "batch_size",
        "unavailable_value_placeholder", "tombstone_retention_hours", "readiness", "http", "overlap",
        "decode_in_database"}


def _expect(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kinds):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return value


def _section(doc: dict, name: str, allowed: set[str], where: str) -> dict:
    value = doc.get(name) or {}
    _expect(f"{where}: {name}", value, dict, "a mapping")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {name}.{unknown[0]}; allowed: {', '.join(sorted(allowed))}")
    return value


def _interp(value: Any, environ: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, environ, where)
    if isinstance(value, list):
        return [_interp(v, environ, where) for v in value]
    if isinstance(value, dict):
        return {k: _interp(v, environ, f"{where}.{k}") for k, v in value.items()}
    return value


def parse_consumer_config(doc: Any, where: str, environ: Mapping[str, str] | None = None
                          ) -> ConsumerConfig:
    """Validate a parsed YAML document; every error names `where` and the key."""
    environ = os.environ if environ is None else environ
    if doc is None:
        doc = {}
    _expect(where, doc, dict, "a mapping")
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_TOP))}")
    from ecst.exceptions import DefinitionError

    try:
        doc = _interp(doc, environ, where)
    except DefinitionError as exc:
        raise ConfigError(str(exc)) from exc
    kafka = _section(doc, "kafka", {"bootstrap_servers", "group_id", "group_instance_id", "client",
                                    "security_protocol", "sasl", "ssl"}, where)
    state = _section(doc, "state", {"url"}, where)
    http = _section(doc, "http", {"host", "port"}, where)
    out: dict[str, Any] = {}
    if "bootstrap_servers" in kafka:
        out["bootstrap_servers"] = _expect(f"{where}: kafka.bootstrap_servers",
                                           kafka["bootstrap_servers"], str, "host:port[,host:port]")
    if "group_id" in kafka:
        out["group_id"] = _expect(f"{where}: kafka.group_id", kafka["group_id"], str, "a string")
    if "group_instance_id" in kafka:
        value = kafka["group_instance_id"]
        out["group_instance_id"] = check_instance_id("" if value is None else value,
                                                     f"{where}: kafka.group_instance_id")
    if "client" in kafka:
        out["kafka_client"] = check_client(kafka["client"], f"{where}: kafka.client")
    if {"security_protocol", "sasl", "ssl"} & set(kafka):
        out["kafka_security"] = _security(kafka, where)
    if "url" in state:
        out["state_url"] = Secret(_expect(f"{where}: state.url", state["url"], str, "a SQLAlchemy URL"))
    if "topics" in doc:
        topics = _expect(f"{where}: topics", doc["topics"], list, "a list of topic mappings")
        if not topics:
            raise ConfigError(f"{where}: topics: expected at least one topic")
        out["topics"] = tuple(_topic(t, f"{where}: topics[{i}]") for i, t in enumerate(topics))
    for key, kind, what, name in (
        ("dead_letter_topic", (str, type(None)), "a topic name or null", "dead_letter_topic"),
        ("fail_fast", bool, "true or false", "fail_fast"),
        ("decode_in_database", bool, "true or false", "decode_in_database"),
        ("unavailable_value_placeholder", str, "a string", "placeholder"),
        ("readiness", str, f"one of {', '.join(READINESS)}", "readiness"),
    ):
        if key in doc:
            out[name] = _expect(f"{where}: {key}", doc[key], kind, what)
    if out.get("readiness", "snapshot") not in READINESS:
        raise ConfigError(f"{where}: readiness: expected one of {', '.join(READINESS)}, "
                          f"got {out['readiness']!r}")
    if "overlap" in doc:
        value = _expect(f"{where}: overlap", doc["overlap"], (bool, str), "true, false or auto")
        if value not in (True, False, "auto"):
            raise ConfigError(f"{where}: overlap: expected true, false or auto, got {value!r}")
        out["overlap"] = None if value == "auto" else value
    if "batch_size" in doc:
        out["batch_size"] = check_batch_size(doc["batch_size"], f"{where}: batch_size")
    if "tombstone_retention_hours" in doc:
        out["tombstone_retention_hours"] = check_retention(doc["tombstone_retention_hours"],
                                                           f"{where}: tombstone_retention_hours")
    if "host" in http:
        out["http_host"] = check_host(http["host"], f"{where}: http.host")
    if http.get("port") is not None:
        out["http_port"] = check_port(http["port"], f"{where}: http.port")
    return ConsumerConfig(**out)


_SECURITY_KEYS = {"sasl": {"mechanism": "mechanism", "username": "username", "password": "password"},
                  "ssl": {"cafile": "cafile", "certfile": "certfile", "keyfile": "keyfile",
                          "check_hostname": "check_hostname"}}


def _security(kafka: dict, where: str) -> KafkaSecurity:
    """kafka.security_protocol, kafka.sasl.* and kafka.ssl.*: each value checked here (its
    completeness, e.g. a password from ECST_KAFKA_SASL_PASSWORD, once the overrides are known)."""
    values: dict[str, Any] = {}
    if "security_protocol" in kafka:
        values["protocol"] = _expect(f"{where}: kafka.security_protocol", kafka["security_protocol"], str,
                                     "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    for name, keys in _SECURITY_KEYS.items():
        section = _expect(f"{where}: kafka.{name}", kafka.get(name) or {}, dict, "a mapping")
        unknown = sorted(set(section) - set(keys))
        if unknown:
            raise ConfigError(f"{where}: unknown key kafka.{name}.{unknown[0]}; "
                              f"allowed: {', '.join(sorted(keys))}")
        for key, field_name in keys.items():
            if key not in section or section[key] is None:
                continue
            kind: type = bool if key == "check_hostname" else str
            values[field_name] = _expect(f"{where}: kafka.{name}.{key}", section[key], kind,
                                         "true or false" if kind is bool else "a string")
    try:
        return from_values(values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _topic(doc: Any, where: str) -> TopicMapping:
    if isinstance(doc, str):
        return TopicMapping(doc)
    _expect(where, doc, dict, "a topic name or a mapping with topic, table, key, columns")
    unknown = sorted(set(doc) - {"topic", "table", "key", "columns", "tombstones"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; "
                          "allowed: columns, key, table, tombstones, topic")
    tombstones = doc.get("tombstones", "delete")
    if tombstones not in ("ignore", "delete"):
        raise ConfigError(f"{where}.tombstones: expected ignore or delete, got {tombstones!r}")
    topic = _expect(f"{where}.topic", doc.get("topic"), str, "a topic name")
    table = doc.get("table")
    if table is not None:
        _expect(f"{where}.table", table, str, "a table name")
    key = doc.get("key")
    if key is not None:
        key = (key,) if isinstance(key, str) else tuple(
            _expect(f"{where}.key", k, str, "column names") for k in
            _expect(f"{where}.key", key, list, "a column name or a list of them"))
    columns = doc.get("columns")
    if columns is not None:
        if isinstance(columns, list):
            columns = {_expect(f"{where}.columns", c, str, "column names"): c for c in columns}
        _expect(f"{where}.columns", columns, dict, "a list of columns or a mapping source: state")
        for src, dst in columns.items():
            _expect(f"{where}.columns.{src}", dst, str, "the state column's name")
        if key:
            missing = [k for k in key if k not in columns]
            if missing:
                raise ConfigError(f"{where}.columns: key column {missing[0]!r} must be kept")
    return TopicMapping(topic, table, key, columns, tombstones)


def load_consumer_config(path: Path | str, environ: Mapping[str, str] | None = None) -> ConsumerConfig:
    """Read and validate a consumer YAML file."""
    path = Path(path)
    doc = read_yaml(path, ConfigError)
    return parse_consumer_config(doc, str(path), environ)

"""Options more than one command module uses: the Connect cluster's, the consumer state's, and
Kafka's security settings."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import click

from ecst.connectors.client import ConnectClient
from ecst.connectors.contexts import resolve
from ecst.consumer.config import ConsumerConfig, load_consumer_config
from ecst.kafka_security import ENV as SECURITY_ENV
from ecst.kafka_security import MECHANISMS, PROTOCOLS, from_values
from ecst.settings import Secret, Settings


def cluster_options(f: Callable) -> Callable:
    """--connect-url / --context / --user on every command that talks to Connect."""
    @click.option("--connect-url", envvar="ECST_CONNECT_URL",
                  help="Kafka Connect REST URL. Default: the context's, else the local stack's.")
    @click.option("--context", help="Named cluster from ~/.config/ecst/contexts.yaml (ECST_CONTEXTS).")
    @click.option("--user", envvar="ECST_CONNECT_USER",
                  help="Basic-auth user; the password is read from ECST_CONNECT_PASSWORD.")
    @functools.wraps(f)
    def wrapper(*args: Any, connect_url: str | None, context: str | None, user: str | None,
                **kwargs: Any) -> Any:
        settings: Settings = click.get_current_context().obj
        ctx = resolve(connect_url, context, settings.effective_connect_url, user)
        return f(*args, client=ConnectClient(ctx.url, auth=ctx.auth), **kwargs)

    return wrapper


state_options = [
    click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
                 help="The consumer's YAML (topics, mapping, state URL)."),
    click.option("--state-url", envvar="ECST_STATE_URL", help="SQLAlchemy URL of the private state."),
    click.option("--topic", "topics", multiple=True, help="Debezium change topic; repeatable."),
]


def with_state_options(f: Callable) -> Callable:
    """-c/--config, --state-url and --topic: which private state a command reads or rebuilds."""
    for option in reversed(state_options):
        f = option(f)
    return f


def consumer_config(config_file: str | None, state_url: str | None, topics: tuple[str, ...],
                    group: str | None) -> ConsumerConfig:
    """The consumer's config from `with_state_options`' values (and --group, when the command has it)."""
    config = load_consumer_config(config_file) if config_file else ConsumerConfig()
    if topics:
        config = config.with_(topics=tuple(config.mapping(t) for t in topics))
    return config.with_(state_url=Secret(state_url) if state_url else None, group_id=group)


kafka_security_options = [
    click.option("--kafka-security-protocol", envvar="ECST_KAFKA_SECURITY_PROTOCOL",
                 type=click.Choice(PROTOCOLS, case_sensitive=False),
                 help="How to reach Kafka: PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL "
                      "(kafka.security_protocol)."),
    click.option("--kafka-sasl-mechanism", envvar="ECST_KAFKA_SASL_MECHANISM",
                 type=click.Choice(MECHANISMS, case_sensitive=False),
                 help="SASL mechanism (kafka.sasl.mechanism); the password is read from "
                      "ECST_KAFKA_SASL_PASSWORD or kafka.sasl.password, never from an option."),
    click.option("--kafka-sasl-username", envvar="ECST_KAFKA_SASL_USERNAME",
                 help="SASL user (kafka.sasl.username)."),
    click.option("--kafka-ssl-cafile", envvar="ECST_KAFKA_SSL_CAFILE",
                 help="CA certificate (PEM) that signed the brokers' certificates (kafka.ssl.cafile)."),
    click.option("--kafka-ssl-certfile", envvar="ECST_KAFKA_SSL_CERTFILE",
                 help="Client certificate (PEM) for mutual TLS (kafka.ssl.certfile)."),
    click.option("--kafka-ssl-keyfile", envvar="ECST_KAFKA_SSL_KEYFILE",
                 help="The client certificate's private key (PEM) (kafka.ssl.keyfile)."),
]
_SECURITY_OPTIONS = {"protocol": "kafka_security_protocol", "mechanism": "kafka_sasl_mechanism",
                     "username": "kafka_sasl_username", "cafile": "kafka_ssl_cafile",
                     "certfile": "kafka_ssl_certfile", "keyfile": "kafka_ssl_keyfile"}


def with_kafka_security(f: Callable) -> Callable:
    """The --kafka-* security options (each also an ECST_KAFKA_* variable; the password and
    ssl.check_hostname only from ECST_KAFKA_SASL_PASSWORD / ECST_KAFKA_SSL_CHECK_HOSTNAME): the
    command receives `kafka_security`, the field -> value overrides to apply over the config file's
    (`apply_kafka_security`)."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        overrides = {name: kwargs.pop(option) for name, option in _SECURITY_OPTIONS.items()}
        for name in ("password", "check_hostname"):
            overrides[name] = os.environ.get(SECURITY_ENV[name]) or None
        return f(*args, kafka_security=overrides, **kwargs)

    for option in reversed(kafka_security_options):
        wrapper = option(wrapper)
    return wrapper


def apply_kafka_security(config: ConsumerConfig, overrides: dict[str, Any]) -> ConsumerConfig:
    """`config` with the options' and variables' security settings over the file's."""
    if not any(v is not None for v in overrides.values()):
        return config
    return config.with_(kafka_security=from_values(overrides, config.kafka_security))

"""`ecst consume`: run the consumer that keeps the private state."""

from __future__ import annotations

import errno
import logging
import signal
import threading
from types import FrameType
from typing import Any

import click

from ecst.cli.errors import ensure_state_folder
from ecst.cli.options import apply_kafka_security, with_kafka_security
from ecst.consumer.config import (
    DEFAULT_TOPIC,
    MAX_BATCH_SIZE,
    ConsumerConfig,
    check_batch_size,
    check_host,
    check_instance_id,
    check_port,
    default_instance_id,
    load_consumer_config,
)
from ecst.consumer.decoding import check_mappings
from ecst.consumer.http import StatusServer
from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import StoreHealth, wait_for_store
from ecst.consumer.runner import Consumer, RunStats
from ecst.consumer.store import StateStore, check_state_url
from ecst.exceptions import ConfigError
from ecst.kafka import CLIENTS, as_settings, check_login, require_client
from ecst.logs import configure_logging
from ecst.settings import LOG_FORMATS, LOG_LEVELS, Secret, Settings

log = logging.getLogger("ecst.consume")


@click.command()
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
              help="Consumer YAML (topics, mapping, dead-letter topic, readiness, HTTP port).")
@click.option("--state-url", envvar="ECST_STATE_URL",
              help="SQLAlchemy URL of the private state (sqlite or postgresql). "
                   "Default: sqlite:///ecst-state.db")
@click.option("--topic", "topics", multiple=True,
              help=f"Debezium change topic to mirror; repeatable. Default: {DEFAULT_TOPIC}")
@click.option("--group", envvar="ECST_GROUP_ID", help="Kafka consumer group id.")
@click.option("--group-instance-id", envvar="ECST_GROUP_INSTANCE_ID",
              help="Kafka static member id, unique to this process in its group: a restarted process "
                   "takes its partitions back at once. Default: <hostname>-<group>; \"\" for a "
                   "dynamic member.")
@click.option("--bootstrap-servers", envvar="ECST_BOOTSTRAP_SERVERS",
              help="Kafka bootstrap servers. Default: the local stack's broker.")
@click.option("--kafka-client", envvar="ECST_KAFKA_CLIENT", type=click.Choice(CLIENTS),
              help="The consumer's Kafka client: kafka-python (default) or confluent, faster "
                   "(pip install 'ecst[kafka-confluent]').")
@with_kafka_security
@click.option("--batch-size", type=int,
              help=f"Records per poll, applied in one transaction (1 to {MAX_BATCH_SIZE}).")
@click.option("--dead-letter-topic", help="Send undecodable/rejected records here and go on.")
@click.option("--fail-fast", is_flag=True, default=None,
              help="Stop at the first bad record instead of dead-lettering it.")
@click.option("--http-port", type=int, help="Serve /healthz, /readyz, /metrics on this port.")
@click.option("--http-host", envvar="ECST_HTTP_HOST",
              help="Address the HTTP endpoints bind: 0.0.0.0 in a container, so that probes and "
                   "Prometheus reach them. Default: http.host of the config file, else 127.0.0.1.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Level of the log lines (ECST_LOG_LEVEL); as `ecst --log-level`. Default: INFO, a line "
                   "per applied batch.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS, case_sensitive=False),
              help="text, or json: one JSON object a line (ECST_LOG_FORMAT); as `ecst --log-format`.")
@click.option("--until-caught-up", is_flag=True,
              help="Exit 0 once the end offsets the topics had at start are applied.")
@click.option("--until-ready", is_flag=True,
              help="Exit 0 once each topic's Debezium snapshot has been completely applied.")
@click.pass_obj
def consume(settings: Settings, config_file: str | None, state_url: str | None,
            topics: tuple[str, ...], group: str | None, group_instance_id: str | None,
            bootstrap_servers: str | None, kafka_client: str | None, kafka_security: dict[str, Any],
            batch_size: int | None,
            dead_letter_topic: str | None,
            fail_fast: bool | None, http_port: int | None, http_host: str | None,
            log_level: str | None, log_format: str | None, until_caught_up: bool,
            until_ready: bool) -> None:
    """Apply Debezium change events to the private state; SIGTERM finishes the batch and exits 0.

    A topic the run read nothing from gets a line on stderr saying why: it holds no records (a
    warning: its connector is not producing, e.g. its task FAILED), or the state already holds it
    up to the offsets stored with it.

    While the state store is unavailable (at start or later) the consumer waits for it, with
    /readyz answering 503 and ecst_state_store_up 0, and goes on by itself when it is back.
    A topic that does not exist yet (its connector not applied) is waited for too, with /readyz
    saying so; with --until-caught-up or --until-ready, for 120 s at most.

    \b
    Example:
        ecst consume --state-url sqlite:///users.db --until-ready
        ecst consume -c consumer/users.yaml --http-port 8080
        ecst consume -c consumer/users.yaml --http-host 0.0.0.0 --log-format json
    """
    if log_level or log_format:  # given after the command: they win over the root's
        settings = settings.with_(log_level=log_level or settings.log_level,
                                  log_format=log_format or settings.log_format)
        configure_logging(settings, "consume")
    # Every value is checked before anything is opened, bound or written.
    config = load_consumer_config(config_file) if config_file else ConsumerConfig()
    if batch_size is not None:
        check_batch_size(batch_size, "--batch-size")
    if http_port is not None:
        check_port(http_port, "--http-port")
    if group_instance_id is not None:
        check_instance_id(group_instance_id, "--group-instance-id")
    config = config.with_(
        state_url=Secret(state_url) if state_url else None, group_id=group,
        group_instance_id=group_instance_id, bootstrap_servers=bootstrap_servers, kafka_client=kafka_client,
        batch_size=batch_size, dead_letter_topic=dead_letter_topic, fail_fast=fail_fast,
        http_port=http_port, http_host=check_host(http_host, "--http-host") if http_host else None,
    )
    config = apply_kafka_security(config, kafka_security)
    if config.group_instance_id is None:
        config = config.with_(group_instance_id=default_instance_id(config.group_id))
    if topics:
        config = config.with_(topics=tuple(config.mapping(t) for t in topics))
    check_state_url(config.state_url.reveal())  # a database ecst cannot use: say so now
    bootstrap = as_settings(config.bootstrap_servers or settings.effective_bootstrap_servers,
                            config.kafka_client, config.kafka_security)  # security checked here
    require_client(bootstrap)  # the confluent client chosen but not installed: say so first
    check_login(bootstrap)  # credentials the brokers refuse: one line now, not after a timeout
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    metrics = Metrics()
    health = StoreHealth(metrics)
    running: list[Consumer] = []  # the consumer, once the state store is open
    server = None
    if config.http_port is not None:
        server = serve(config, "--http-port" if http_port is not None else f"{config_file}: http.port",
                       healthy=lambda: not running or running[0].healthy(),
                       not_ready=lambda: running[0].not_ready_reason() if running else (
                           "state store unavailable" if not health.up else "starting"),
                       metrics=metrics)
        click.echo(f"serving /healthz /readyz /metrics on http://{config.http_host}:{server.port}",
                   err=True)
    try:
        check_mappings(config, bootstrap)  # a mapping the records do not fit: nothing is written
        store = wait_for_store(lambda: _open_store(config), health, stop)
        if store is None:
            click.echo("stopped while waiting for the state store: nothing was applied", err=True)
            return
        running.append(Consumer(store, config=config, bootstrap_servers=bootstrap, metrics=metrics,
                                health=health, mappings_checked=True))
        try:
            # A service waits for its topics as long as it takes; a one-shot run gives up after 120 s.
            stats = running[0].run(until_caught_up=until_caught_up, until_ready=until_ready, stop=stop,
                                   topic_timeout_s=120.0 if until_caught_up or until_ready else None)
        finally:
            store.close()
    finally:
        if server is not None:
            server.stop()
    ops = " ".join(f"{op}={n}" for op, n in sorted(stats.apply.by_op.items())) or "no changes"
    click.echo(
        f"applied {stats.records} records in {stats.batches} batches ({ops}, {stats.ignored} "
        f"ignored, {stats.apply.stale} stale, {stats.dead_lettered} dead-lettered) to {store.safe_url}"
    )
    for line in why_nothing(running[0].topics, stats):
        click.echo(line, err=True)


def _open_store(config: ConsumerConfig) -> StateStore:
    ensure_state_folder(config.state_url.reveal())  # a folder that cannot be created: one line
    return StateStore(config.state_url.reveal())


def serve(config: ConsumerConfig, name: str, **endpoints: Any) -> StatusServer:
    """Bind and start the status server, or a ConfigError naming `name` (the option or key) when
    the address cannot be bound."""
    if config.http_port is None:
        raise ConfigError(f"{name}: no port to serve /healthz /readyz /metrics on")
    where = f"{config.http_host}:{config.http_port}"
    try:
        return StatusServer(config.http_host, config.http_port, **endpoints).start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "is already in use by another process: choose another port, or stop that process"
        elif exc.errno == errno.EACCES:
            why = "needs privileges this user does not have: choose a port above 1023"
        else:
            why = (f"cannot be served ({exc.strerror or exc}): check the address (--http-host, http.host "
                   "or ECST_HTTP_HOST) and the port")
        raise ConfigError(f"{name} {config.http_port}: {where} {why}") from exc


def why_nothing(topics: list[str], stats: RunStats) -> list[str]:
    """One line for each topic the run read no record from, saying why."""
    lines = []
    for topic in topics:
        if stats.by_topic.get(topic):
            continue
        if topic in stats.missing:
            lines.append(f"topic {topic} does not exist: stopped while waiting for it (is its connector "
                         "applied and running? `ecst connectors status`)")
        elif topic in stats.empty_at_start:
            lines.append(
                f"Warning: topic {topic} holds no records, so nothing was applied from it: if its table "
                "has rows, its connector is not producing them, usually because its task FAILED (see "
                "`ecst connectors list`, then `ecst connectors status <connector>`; a captured table "
                "without a primary key or message.key.columns fails with \"Compacted topic cannot "
                "accept message without key\")")
        else:
            lines.append(f"topic {topic}: no new records after the offsets stored in the state")
    return lines

"""`ecst consume`: run the consumer that keeps the private state."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click

from ecst.cli.main import cli
from ecst.consumer.config import DEFAULT_TOPIC, ConsumerConfig, load_consumer_config
from ecst.consumer.http import StatusServer
from ecst.consumer.runner import Consumer, RunStats, check_mappings
from ecst.consumer.store import StateStore
from ecst.settings import Secret, Settings

log = logging.getLogger("ecst.consume")


@cli.command()
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
              help="Consumer YAML (topics, mapping, dead-letter topic, readiness, HTTP port).")
@click.option("--state-url", envvar="ECST_STATE_URL",
              help="SQLAlchemy URL of the private state (sqlite or postgresql). "
                   "Default: sqlite:///ecst-state.db")
@click.option("--topic", "topics", multiple=True,
              help=f"Debezium change topic to mirror; repeatable. Default: {DEFAULT_TOPIC}")
@click.option("--group", envvar="ECST_GROUP_ID", help="Kafka consumer group id.")
@click.option("--bootstrap-servers", envvar="ECST_BOOTSTRAP_SERVERS",
              help="Kafka bootstrap servers. Default: the local stack's broker.")
@click.option("--batch-size", type=int, help="Records per poll, applied in one transaction.")
@click.option("--dead-letter-topic", help="Send undecodable/rejected records here and go on.")
@click.option("--fail-fast", is_flag=True, default=None,
              help="Stop at the first bad record instead of dead-lettering it.")
@click.option("--http-port", type=int, help="Serve /healthz, /readyz, /metrics on this port.")
@click.option("--until-caught-up", is_flag=True,
              help="Exit 0 once the end offsets the topics had at start are applied.")
@click.option("--until-ready", is_flag=True,
              help="Exit 0 once each topic's Debezium snapshot has been completely applied.")
@click.pass_obj
def consume(settings: Settings, config_file: str | None, state_url: str | None,
            topics: tuple[str, ...], group: str | None, bootstrap_servers: str | None,
            batch_size: int | None, dead_letter_topic: str | None, fail_fast: bool | None,
            http_port: int | None, until_caught_up: bool, until_ready: bool) -> None:
    """Apply Debezium change events to the private state; SIGTERM finishes the batch and exits 0.

    A topic the run read nothing from gets a line on stderr saying why: it holds no records (a
    warning: its connector is not producing, e.g. its task FAILED), or the state already holds it
    up to the offsets stored with it.

    \b
    Example:
        ecst consume --state-url sqlite:///users.db --until-ready
        ecst consume -c consumer/users.yaml --http-port 8080
    """
    config = load_consumer_config(config_file) if config_file else ConsumerConfig()
    config = config.with_(
        state_url=Secret(state_url) if state_url else None, group_id=group,
        bootstrap_servers=bootstrap_servers, batch_size=batch_size,
        dead_letter_topic=dead_letter_topic, fail_fast=fail_fast, http_port=http_port,
    )
    if topics:
        config = config.with_(topics=tuple(config.mapping(t) for t in topics))
    bootstrap = config.bootstrap_servers or settings.effective_bootstrap_servers
    check_mappings(config, bootstrap)  # a mapping the records do not fit: nothing is written
    store = StateStore(config.state_url.reveal())
    consumer = Consumer(store, config=config, bootstrap_servers=bootstrap, mappings_checked=True)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = None
    if config.http_port is not None:
        server = StatusServer(config.http_host, config.http_port, healthy=consumer.healthy,
                              ready=consumer.ready, metrics=consumer.metrics).start()
        click.echo(f"serving /healthz /readyz /metrics on http://{config.http_host}:{server.port}",
                   err=True)
    try:
        stats = consumer.run(until_caught_up=until_caught_up, until_ready=until_ready, stop=stop)
    finally:
        if server is not None:
            server.stop()
        store.close()
    ops = " ".join(f"{op}={n}" for op, n in sorted(stats.apply.by_op.items())) or "no changes"
    click.echo(
        f"applied {stats.records} records in {stats.batches} batches ({ops}, {stats.ignored} "
        f"ignored, {stats.apply.stale} stale, {stats.dead_lettered} dead-lettered) to {store.safe_url}"
    )
    for line in why_nothing(consumer.topics, stats):
        click.echo(line, err=True)


def why_nothing(topics: list[str], stats: RunStats) -> list[str]:
    """One line for each topic the run read no record from, saying why."""
    lines = []
    for topic in topics:
        if stats.by_topic.get(topic):
            continue
        if topic in stats.empty_at_start:
            lines.append(
                f"Warning: topic {topic} holds no records, so nothing was applied from it: if its table "
                "has rows, its connector is not producing them, usually because its task FAILED (see "
                "`ecst connectors list`, then `ecst connectors status <connector>`; a captured table "
                "without a primary key or message.key.columns fails with \"Compacted topic cannot "
                "accept message without key\")")
        else:
            lines.append(f"topic {topic}: no new records after the offsets stored in the state")
    return lines

"""`ecst consume`: run the consumer that keeps the private state."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from ecst.cli.main import cli
from ecst.consumer.runner import Consumer
from ecst.consumer.store import StateStore
from ecst.settings import Settings

DEFAULT_TOPIC = "producer.public.users"


@cli.command()
@click.option("--state-url", envvar="ECST_STATE_URL", default="sqlite:///ecst-state.db",
              show_default=True, help="SQLAlchemy URL of the private state (sqlite or postgresql).")
@click.option("--topic", "topics", multiple=True, default=[DEFAULT_TOPIC], show_default=True,
              help="Debezium change topic to apply; repeatable.")
@click.option("--group", envvar="ECST_GROUP_ID", default="ecst-consumer", show_default=True,
              help="Kafka consumer group id.")
@click.option("--bootstrap-servers", envvar="ECST_BOOTSTRAP_SERVERS",
              help="Kafka bootstrap servers. Default: the local stack's broker.")
@click.option("--batch-size", default=2000, show_default=True,
              help="Records per poll, applied in one transaction.")
@click.option("--until-caught-up", is_flag=True,
              help="Exit 0 once the end offsets the topics had at start are applied.")
@click.option("--until-ready", is_flag=True,
              help="Exit 0 once each topic's Debezium snapshot has been completely applied.")
@click.pass_obj
def consume(settings: Settings, state_url: str, topics: tuple[str, ...], group: str,
            bootstrap_servers: str | None, batch_size: int, until_caught_up: bool,
            until_ready: bool) -> None:
    """Apply Debezium change events to the private state; SIGTERM finishes the batch and exits 0.

    \b
    Example:
        ecst consume --state-url sqlite:///users.db --until-caught-up
        ecst consume --state-url postgresql://svc@db/svc --group users-svc
    """
    store = StateStore(state_url)
    consumer = Consumer(
        store, list(topics),
        bootstrap_servers=bootstrap_servers or settings.effective_bootstrap_servers,
        group_id=group, batch_size=batch_size,
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        stats = consumer.run(until_caught_up=until_caught_up, until_ready=until_ready, stop=stop)
    finally:
        store.close()
    ops = " ".join(f"{op}={n}" for op, n in sorted(stats.apply.by_op.items())) or "no changes"
    click.echo(
        f"applied {stats.records} records in {stats.batches} batches ({ops}, "
        f"{stats.tombstones} tombstones, {stats.apply.stale} stale) to {store.safe_url}"
    )

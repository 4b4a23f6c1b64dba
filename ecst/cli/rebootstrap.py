"""`ecst rebootstrap` and `ecst verify`: rebuild the private state, or check whether it drifted."""

from __future__ import annotations

import sys
import time

import click
import psycopg

from ecst.cli.main import cli
from ecst.consumer.config import ConsumerConfig, load_consumer_config
from ecst.consumer.store import StateStore
from ecst.exceptions import ConfigError
from ecst.settings import Secret, Settings
from ecst.stack.local import producer_target


def _config(config_file: str | None, state_url: str | None, topics: tuple[str, ...],
            group: str | None) -> ConsumerConfig:
    config = load_consumer_config(config_file) if config_file else ConsumerConfig()
    if topics:
        config = config.with_(topics=tuple(config.mapping(t) for t in topics))
    return config.with_(state_url=Secret(state_url) if state_url else None, group_id=group)


state_options = [
    click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
                 help="The consumer's YAML (topics, mapping, state URL)."),
    click.option("--state-url", envvar="ECST_STATE_URL", help="SQLAlchemy URL of the private state."),
    click.option("--topic", "topics", multiple=True, help="Debezium change topic; repeatable."),
]


def with_state_options(f):  # noqa: ANN001, ANN201 (a decorator)
    for option in reversed(state_options):
        f = option(f)
    return f


@cli.group()
def rebootstrap() -> None:
    """Rebuild the private state into a shadow copy and swap it in atomically.

    \b
    Example:
        ecst rebootstrap replay -c consumer/users.yaml
    """


@rebootstrap.command("replay")
@with_state_options
@click.option("--group", envvar="ECST_GROUP_ID", help="Consumer group (the rebuild uses <group>-rebuild).")
@click.option("--bootstrap-servers", envvar="ECST_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers.")
@click.pass_obj
def replay_cmd(settings: Settings, config_file: str | None, state_url: str | None,
               topics: tuple[str, ...], group: str | None, bootstrap_servers: str | None) -> None:
    """Replay the compacted topic from its beginning into a shadow copy, then swap it in.

    The live tables keep serving, and a running consumer keeps updating them, until the swap.
    Zero load on the producer database. Re-running after a crash resumes the rebuild.

    \b
    Example:
        ecst rebootstrap replay -c consumer/users.yaml
    """
    from ecst.consumer.rebuild import replay

    config = _config(config_file, state_url, topics, group)
    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(p: object) -> None:
        now = time.monotonic()
        if tty:
            click.echo("\r" + p.line(), nl=False, err=True)
        elif now - last[0] > 2:
            click.echo(p.line(), err=True)
            last[0] = now

    bootstrap = bootstrap_servers or config.bootstrap_servers or settings.effective_bootstrap_servers
    result = replay(config.state_url.reveal(), config, bootstrap, progress=progress)
    if tty:
        click.echo("", err=True)
    click.echo(result.summary())


@cli.command()
@with_state_options
@click.option("--producer-url", envvar="ECST_PRODUCER_URL",
              help="The producer database (read only). Default: the local stack's.")
@click.option("--range-size", default=1000, show_default=True, help="Keys per checksummed range.")
@click.pass_obj
def verify(settings: Settings, config_file: str | None, state_url: str | None, topics: tuple[str, ...],
           producer_url: str | None, range_size: int) -> None:
    """Compare the private state with the producer's tables; exit 1 on drift. Read-only on both.

    Row counts and a checksum per key range first, then the keys that differ.

    \b
    Example:
        ecst verify -c consumer/users.yaml
    """
    from ecst.verify import verify_table

    config = _config(config_file, state_url, topics, None)
    target = producer_target(settings, producer_url)
    if target is None:
        raise ConfigError("verify needs the producer database: pass --producer-url or set ECST_PRODUCER_URL")
    conninfo, password = target
    store = StateStore(config.state_url.reveal())
    drifted = False
    try:
        with psycopg.connect(conninfo, password=password, connect_timeout=5) as conn:
            for m in config.topics:
                parts = m.topic.split(".")
                source_table = ".".join(parts[-2:]) if len(parts) >= 3 else parts[-1]
                state_table = m.table or parts[-1]
                rows = store.rows(state_table) if store.has_table(state_table) else []
                drift = verify_table(conn, source_table, rows, state_table, m.columns,
                                     list(m.key) if m.key else None, range_size)
                drifted = drifted or drift.drifted
                click.echo(drift.summary())
    finally:
        store.close()
    if drifted:
        raise SystemExit(1)

"""`ecst rebootstrap …`: rebuild the private state into a shadow copy and swap it in."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import psycopg

from ecst.cli.errors import ensure_state_folder, kafka_errors, one_shot_state
from ecst.cli.options import (
    apply_kafka_security,
    cluster_options,
    consumer_config,
    with_kafka_security,
    with_state_options,
)
from ecst.connectors import producer as producer_db
from ecst.connectors.client import ConnectClient
from ecst.consumer.config import ConsumerConfig
from ecst.consumer.rebuild import Progress
from ecst.kafka import KafkaSettings, as_settings, check_login
from ecst.settings import Settings
from ecst.stack.local import producer_target

RESUME = ", then re-run the command (an unfinished rebuild resumes)"


@click.group()
def rebootstrap() -> None:
    """Rebuild the private state into a shadow copy and swap it in atomically.

    \b
    Which one? (docs/operators.md: "Which re-bootstrap do I need?")
      replay       the topic still holds every key: zero load on the producer
      incremental  re-read the table in chunks while streaming goes on (--where: a backfill)
      blocking     re-read the table while streaming pauses (faster, delays changes)
      fresh        the topic is gone too, or the producer's positions restarted

    \b
    Example:
        ecst rebootstrap replay -c consumer/users.yaml
        ecst rebootstrap incremental -c consumer/users.yaml --connector users
        ecst rebootstrap incremental -c consumer/users.yaml --connector users --where "id <= 5000"
        ecst status -c consumer/users.yaml
    """


def _progress_printer() -> tuple[Callable[[Progress], None], Callable[[], None]]:
    """A progress bar redrawn in place on a terminal; elsewhere (logs, CI) a line every 2 s.
    The second function ends it with the final figures."""
    tty = sys.stderr.isatty()
    last_print = [time.monotonic()]
    latest: list[Progress] = []

    def progress(p: Progress) -> None:
        latest[:] = [p]
        now = time.monotonic()
        if tty:
            click.echo("\r" + p.line(), nl=False, err=True)
        elif now - last_print[0] >= 2:
            click.echo(p.line(), err=True)
            last_print[0] = now

    def done() -> None:
        if latest:
            click.echo(("\r" if tty else "") + latest[0].line(), err=True)

    return progress, done


def _bootstrap(settings: Settings, config: ConsumerConfig, given: str | None) -> KafkaSettings:
    """The Kafka settings of a rebuild: --bootstrap-servers, else the config's, else the local
    stack's; with the config's security settings (the options' and variables' over the file's)."""
    servers = given or config.bootstrap_servers or settings.effective_bootstrap_servers
    return as_settings(servers, None, config.kafka_security)


PRODUCER_FIX = f"{producer_db.FIX}{RESUME}"


@contextmanager
def _edges(config: ConsumerConfig, bootstrap: KafkaSettings) -> Iterator[None]:
    """A rebuild's state database or Kafka that cannot be reached: one line saying what to do."""
    ensure_state_folder(config.state_url.reveal())
    check_login(bootstrap)  # credentials the brokers refuse: one line now, not after a timeout
    with one_shot_state(f"check that it is running and reachable from here{RESUME}"), \
            kafka_errors(bootstrap, RESUME):
        yield


common_options = [
    click.option("--group", envvar="ECST_GROUP_ID",
                 help="The live consumer's group (the rebuild reads as <group>-rebuild)."),
    click.option("--bootstrap-servers", envvar="ECST_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers."),
    click.option("--restart", is_flag=True,
                 help="Discard an unfinished rebuild's shadow copy and start over."),
]


def with_common_options(f: Callable) -> Callable:
    """--group, --bootstrap-servers and --restart, the Kafka security options and the state
    options: every rebootstrap mode's."""
    for option in reversed(common_options):
        f = option(f)
    return with_state_options(with_kafka_security(f))


@rebootstrap.command("replay")
@with_common_options
@click.pass_obj
def replay_cmd(settings: Settings, config_file: str | None, state_url: str | None,
               topics: tuple[str, ...], group: str | None, bootstrap_servers: str | None,
               restart: bool, kafka_security: dict[str, Any]) -> None:
    """Replay the compacted topic from its beginning into a shadow copy, then swap it in.

    The live tables keep serving, and a running consumer keeps updating them, until the swap.
    Zero load on the producer database. Re-running after a crash resumes the rebuild.

    \b
    Example:
        ecst rebootstrap replay -c consumer/users.yaml
    """
    from ecst.consumer.rebuild import replay

    config = apply_kafka_security(consumer_config(config_file, state_url, topics, group), kafka_security)
    bootstrap = _bootstrap(settings, config, bootstrap_servers)
    progress, done = _progress_printer()
    try:
        with _edges(config, bootstrap):
            result = replay(config.state_url.reveal(), config, bootstrap, restart=restart, progress=progress)
    finally:
        done()
    click.echo(result.summary())


CHANNEL = click.option("--channel", type=click.Choice(["auto", "source", "kafka"]), default="auto",
                       show_default=True, help="Signal through the signal table (source) or the Kafka "
                       "signal topic; auto takes the table when the producer database is known (Debezium "
                       "then acts on its streaming thread alone), else Kafka.")
WHERE = click.option("--where", help="SQL condition on the source table: a filtered backfill "
                     "(Debezium's additional-conditions, run by Debezium as the connector's role; ecst "
                     "never runs it). One condition: no ;, comments, dollar quotes or backslashes.")


def _connect_log(settings: Settings, client: ConnectClient) -> Path | None:
    """The Connect worker's log when Connect is the local stack's (Postgres's message for a
    snapshot query that failed is only there)."""
    log = settings.home / "logs" / "connect.log"
    local = client.url.rstrip("/") == f"http://127.0.0.1:{settings.connect_port}"
    return log if local and log.exists() else None


def _snapshot_command(mode: str, help_text: str, options: tuple[Callable, ...] = ()) -> Callable:
    """One `ecst rebootstrap <mode>` command for a snapshot-based mode."""

    def command(settings: Settings, config_file: str | None, state_url: str | None,
                topics: tuple[str, ...], group: str | None, bootstrap_servers: str | None,
                restart: bool, kafka_security: dict[str, Any], connector: str, producer_url: str | None,
                client: ConnectClient, channel: str = "auto", where: str | None = None) -> None:
        from ecst.consumer.rebuild import SnapshotSource, rebuild

        config = apply_kafka_security(consumer_config(config_file, state_url, topics, group), kafka_security)
        bootstrap = _bootstrap(settings, config, bootstrap_servers)
        target = producer_target(settings, producer_url)
        opener = None
        if target is not None:
            conninfo, password = target

            def opener() -> psycopg.Connection:
                return producer_db.connect(conninfo, password, autocommit=True, fix=PRODUCER_FIX)

        source = SnapshotSource(client, connector, channel, opener, _connect_log(settings, client))
        progress, done = _progress_printer()
        try:
            with _edges(config, bootstrap):
                result = rebuild(mode, config.state_url.reveal(), config, bootstrap, source=source,
                                 condition=where, restart=restart, progress=progress)
        finally:
            done()
        click.echo(result.summary())

    for option in reversed(options):
        command = option(command)
    command = click.pass_obj(cluster_options(command))
    command = click.option("--producer-url", envvar="ECST_PRODUCER_URL",
                           help="The producer database: signal table, slot, row estimate. "
                                "Default: the local stack's.")(command)
    command = click.option("--connector", required=True,
                           help="The Debezium connector that captures the table.")(command)
    return rebootstrap.command(mode, help=help_text)(with_common_options(command))


INCREMENTAL_HELP = """Re-read the table with a Debezium incremental snapshot, into a shadow copy.

    ecst signals the connector (`execute-snapshot`, type incremental) through its signal table
    or Kafka signal topic; the table is read in key chunks while streaming goes on, and the
    shadow receives both. When Debezium reports the snapshot COMPLETED and the shadow has caught
    up, it replaces the live tables in one transaction: rows deleted in the source disappear.

    With --where, a filtered backfill: only the matching rows are re-read, and they are merged
    into the live state (never over a newer row or delete); nothing else is touched. The
    condition is checked to be one SQL condition and sent to Debezium, which runs it as the
    connector's role; a condition Postgres refuses fails the command with Debezium's reason.

    \b
    Example:
        ecst rebootstrap incremental -c consumer/users.yaml --connector users
        ecst rebootstrap incremental -c consumer/users.yaml --connector users \\
            --where "country = 'DE'" --channel kafka
    """

BLOCKING_HELP = """Re-read the table with a Debezium blocking snapshot, into a shadow copy.

    Streaming pauses while the table is read (changes are delayed, not lost), then resumes.
    The shadow replaces the live tables once the snapshot's last row is applied and the shadow
    has caught up. The live consumer stays ready throughout.

    \b
    Example:
        ecst rebootstrap blocking -c consumer/users.yaml --connector users
    """

FRESH_HELP = """Reset the connector so it takes a new initial snapshot, into a shadow copy.

    For when the topic is lost too, or the producer database was restored and its positions
    restarted. The connector is stopped, its replication slot dropped (when the producer
    database is reachable), its offsets deleted, and it is resumed: it snapshots the table on a
    new slot, then streams. The shadow, which starts with no positions, replaces the live
    tables once that snapshot is applied.

    \b
    Example:
        ecst rebootstrap fresh -c consumer/users.yaml --connector users
    """

incremental_cmd = _snapshot_command("incremental", INCREMENTAL_HELP, (CHANNEL, WHERE))
blocking_cmd = _snapshot_command("blocking", BLOCKING_HELP, (CHANNEL,))
fresh_cmd = _snapshot_command("fresh", FRESH_HELP)

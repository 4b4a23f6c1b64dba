"""`ecst status` and `ecst verify`: what the private state holds, and whether it drifted from the
producer's tables."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
import psycopg
from sqlalchemy.exc import SQLAlchemyError

from ecst.cli.errors import ensure_state_folder, one_shot_state
from ecst.cli.options import consumer_config, with_state_options
from ecst.connectors import producer as producer_db
from ecst.consumer.outage import store_error
from ecst.consumer.store import StateStore
from ecst.exceptions import ProducerError
from ecst.settings import Settings
from ecst.stack.local import producer_target

if TYPE_CHECKING:
    from ecst.verify import StateRows


@click.command()
@with_state_options
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status(config_file: str | None, state_url: str | None, topics: tuple[str, ...], output: str) -> None:
    """Show the private state: tables, offsets, snapshots, and any rebuild in progress.

    Read-only. The same rebuild figures are on the consumer's /metrics (ecst_rebuild_*).

    \b
    Example:
        ecst status -c consumer/users.yaml
    """
    from ecst.consumer.status import state_status

    config = consumer_config(config_file, state_url, topics, None)
    ensure_state_folder(config.state_url.reveal())
    with one_shot_state():
        report = state_status(config.state_url.reveal())
    if output == "json":
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(report_text(report))


def report_text(report: dict[str, Any]) -> str:
    """`ecst status`'s report for a terminal."""
    from ecst.consumer.status import render_text

    return render_text(report)


@click.command()
@with_state_options
@click.option("--producer-url", envvar="ECST_PRODUCER_URL",
              help="The producer database (read only). Default: the local stack's.")
@click.option("--range-size", default=1000, show_default=True, help="Keys per checksummed range.")
@click.pass_obj
def verify(settings: Settings, config_file: str | None, state_url: str | None, topics: tuple[str, ...],
           producer_url: str | None, range_size: int) -> None:
    """Compare the private state with the producer's tables; exit 1 on drift. Read-only on both.

    Row counts and a checksum per key range first, then the keys that differ. Each column is
    compared in the form the consumer stores it (intervals in the connector's
    interval.handling.mode, inet/cidr as text, json by value, NULL apart from JSON null); columns
    of types verify cannot compare (geometric, bit strings) are named in the output.

    \b
    Example:
        ecst verify -c consumer/users.yaml
    """
    from ecst.verify import verify_table

    config = consumer_config(config_file, state_url, topics, None)
    target = producer_target(settings, producer_url)
    if target is None:
        raise ProducerError("verify needs the producer database: pass --producer-url or set "
                            "ECST_PRODUCER_URL")
    conninfo, password = target
    ensure_state_folder(config.state_url.reveal())
    with one_shot_state():
        store = StateStore(config.state_url.reveal())
    drifted = False
    source_table = ""
    try:
        with one_shot_state(), producer_db.connect(conninfo, password) as conn:
            for m in config.topics:
                parts = m.topic.split(".")
                source_table = ".".join(parts[-2:]) if len(parts) >= 3 else parts[-1]
                state_table = m.table or parts[-1]
                drift = verify_table(conn, source_table, _state_rows(store, state_table), state_table,
                                     m.columns, list(m.key) if m.key else None, range_size)
                drifted = drifted or drift.drifted
                click.echo(drift.summary())
    except psycopg.OperationalError as exc:  # the connection was lost while reading
        raise ProducerError(f"lost the producer database {producer_db.describe(conninfo)} while reading "
                            f"{source_table} ({producer_db.first_line(exc)}): check that it is running, "
                            "then re-run verify") from exc
    except psycopg.Error as exc:
        raise ProducerError(f"cannot read the producer table {source_table} in "
                            f"{producer_db.describe(conninfo)}: {producer_db.first_line(exc)}: check that "
                            "each topic (--topic, -c) is that table's and that the role may read it") from exc
    finally:
        store.close()
    if drifted:
        raise SystemExit(1)


def _state_rows(store: StateStore, table: str) -> StateRows:
    """`read_state`, its database errors told as the store's own are (unavailable, or unusable)."""
    from ecst.verify import read_state

    try:
        return read_state(store, table)
    except SQLAlchemyError as exc:
        error = store_error(exc, store.safe_url)
        if error is not None:
            raise error from exc
        raise

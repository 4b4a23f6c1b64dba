"""`ecst demo`: the whole pipeline on the local stack, ending with a row-by-row comparison."""

from __future__ import annotations

import click

from ecst.cli.errors import kafka_errors
from ecst.demo import run_demo
from ecst.settings import Settings


@click.command()
@click.option("--rows", default=5000, show_default=True,
              help="Users in the producer's table before the connector exists.")
@click.pass_obj
def demo(settings: Settings, rows: int) -> None:
    """Stack up, snapshot, stream, compare. The last line says whether state matches producer.

    \b
    Example:
        ecst demo --rows 5000
    """
    with kafka_errors(f"127.0.0.1:{settings.kafka_port}"):  # the local stack's broker
        matches = run_demo(settings, rows=rows, echo=click.echo)
    if not matches:
        raise SystemExit(1)

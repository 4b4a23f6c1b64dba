"""`ecst stack up|down|status|env`: the local stack without Docker."""

from __future__ import annotations

import click

from ecst.settings import Settings
from ecst.stack import LocalStack


@click.group()
def stack() -> None:
    """Run Postgres, Kafka (KRaft) and Kafka Connect + Debezium locally, without Docker.

    \b
    Example:
        ecst stack up && eval "$(ecst stack env)" && ecst stack status
    """


@stack.command()
@click.option("--secure/--no-secure", default=None,
              help="Turn the secure profile on (a SASL_SSL listener with SCRAM-SHA-512 on "
                   "ECST_KAFKA_SECURE_PORT, default 19094, beside PLAINTEXT) or off. Default: keep "
                   "this home's choice.")
@click.pass_obj
def up(settings: Settings, secure: bool | None) -> None:
    """Install what is missing and start every component; returns once all are healthy.

    \b
    Example:
        ecst stack up
        ecst stack up --secure && eval "$(ecst stack env --secure --show-password)"
    """
    s = LocalStack(settings)
    for c in s.up(log=lambda msg: click.echo(f"… {msg}", err=True), secure=secure):
        click.echo(f"{c.name:<9} running  pid {c.pid:<8} {c.address}")


@stack.command()
@click.pass_obj
def down(settings: Settings) -> None:
    """Stop the processes `ecst stack up` started (by PID). Data is kept.

    \b
    Example:
        ecst stack down
    """
    stopped = LocalStack(settings).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Show each component, its PID and its address. Exit 1 if any is not running.

    \b
    Example:
        ecst stack status
    """
    comps = LocalStack(settings).status()
    for c in comps:
        state = "running" if c.running else "stopped"
        click.echo(f"{c.name:<9} {state:<8} pid {c.pid or '-':<8} {c.address}")
    if not all(c.running for c in comps):
        raise SystemExit(1)


@stack.command()
@click.option("--secure", is_flag=True,
              help="Point Kafka clients at the secure profile's SASL_SSL listener (ECST_KAFKA_* lines).")
@click.option("--show-password", is_flag=True,
              help="With --secure: print ECST_KAFKA_SASL_PASSWORD too (else a comment says where it is).")
@click.pass_obj
def env(settings: Settings, secure: bool, show_password: bool) -> None:
    """Print the connection settings as shell `export` lines (passwords go via PGPASSFILE).

    \b
    Example:
        eval "$(ecst stack env)"; psql -c 'select count(*) from users'
        eval "$(ecst stack env --secure --show-password)"; ecst consume --until-caught-up
    """
    stack_ = LocalStack(settings)
    lines = stack_.env_lines()
    if secure:
        lines = [line for line in lines if not line.startswith("export ECST_BOOTSTRAP_SERVERS=")]
        lines += stack_.secure_env_lines(password=show_password)
    for line in lines:
        click.echo(line)

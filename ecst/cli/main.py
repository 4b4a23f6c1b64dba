"""`ecst`: the root command (every command module's commands added to it), logging and the
error-to-exit-code policy."""

from __future__ import annotations

import logging
import sys

import click

from ecst import __version__
from ecst.cli.connectors import connectors
from ecst.cli.consume import consume
from ecst.cli.demo import demo
from ecst.cli.rebootstrap import rebootstrap
from ecst.cli.stack import stack
from ecst.cli.state import status, verify
from ecst.exceptions import ConnectorFailedError, EcstError
from ecst.logs import configure_logging
from ecst.settings import LOG_FORMATS, LOG_LEVELS, Settings, redact


class EcstGroup(click.Group):
    """Turns every deliberate ecst error into `Error: …` on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConnectorFailedError as exc:
            click.echo(redact(f"Error: {exc}"), err=True)
            if exc.trace:
                click.echo(redact("\n".join(exc.trace.strip().splitlines()[:25])), err=True)
            sys.exit(1)
        except EcstError as exc:
            click.echo(redact(f"Error: {exc}"), err=True)
            sys.exit(1)


@click.group(cls=EcstGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ecst")
@click.option("--home", type=click.Path(file_okay=False), envvar="ECST_HOME",
              help="Folder of the local stack (jars, logs, data). Default: ./.ecst")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Level of ecst's log lines (ECST_LOG_LEVEL). Default: INFO for `ecst consume` (a "
                   "line per batch), WARNING for the other commands.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS, case_sensitive=False),
              help="Log lines as text, or as JSON objects with ts, level, logger, message and fields "
                   "(ECST_LOG_FORMAT). Default: text.")
@click.pass_context
def cli(ctx: click.Context, home: str | None, verbose: int, log_level: str | None,
        log_format: str | None) -> None:
    """ecst: keep a private copy of another service's table, built from Debezium change events.

    \b
    Example:
        ecst stack up
        ecst connectors apply -f connectors/users.yaml
        ecst consume --until-caught-up
        ecst --log-format json consume -c consumer/users.yaml --http-port 8080
    """
    if log_level is None and verbose:  # -v, -vv: a shorthand for --log-level
        log_level = "INFO" if verbose == 1 else "DEBUG"
    ctx.obj = Settings.from_env(home=home, log_level=log_level, log_format=log_format)
    configure_logging(ctx.obj, ctx.invoked_subcommand)
    if verbose > 2:  # -vvv: kafka-python's own lines too
        logging.getLogger("kafka").setLevel(logging.DEBUG)


for command in (stack, connectors, consume, rebootstrap, status, verify, demo):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ecst")

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
from ecst.settings import RedactingFilter, Settings, redact


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


def setup_logging(verbose: int) -> None:
    """Log to stderr, every line redacted; ecst's own loggers at WARNING unless -v."""
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for handler in logging.getLogger().handlers:  # no secret reaches a log line
        handler.addFilter(RedactingFilter())
    # kafka-python logs every refused connection at ERROR; ecst reports what matters itself.
    logging.getLogger("kafka").setLevel(logging.DEBUG if verbose > 2 else logging.CRITICAL)
    logging.getLogger("ecst").setLevel(level if verbose else logging.WARNING)


@click.group(cls=EcstGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ecst")
@click.option("--home", type=click.Path(file_okay=False), envvar="ECST_HOME",
              help="Folder of the local stack (jars, logs, data). Default: ./.ecst")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, home: str | None, verbose: int) -> None:
    """ecst: keep a private copy of another service's table, built from Debezium change events.

    \b
    Example:
        ecst stack up
        ecst connectors apply -f connectors/users.yaml
        ecst consume --until-caught-up
    """
    setup_logging(verbose)
    ctx.obj = Settings.from_env(home=home)


for command in (stack, connectors, consume, rebootstrap, status, verify, demo):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ecst")

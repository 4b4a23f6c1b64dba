"""`ecst connectors …`: connector definitions (YAML) applied to Kafka Connect, kubectl-style."""

from __future__ import annotations

import json

import click

from ecst.cli.main import cli
from ecst.connectors import apply as apply_mod
from ecst.connectors.client import ConnectClient
from ecst.connectors.definition import load_definitions
from ecst.settings import Settings

connect_url_option = click.option(
    "--connect-url", envvar="ECST_CONNECT_URL",
    help="Kafka Connect REST URL. Default: the local stack's (http://127.0.0.1:18083).",
)


def _client(settings: Settings, connect_url: str | None) -> ConnectClient:
    return ConnectClient(connect_url or settings.effective_connect_url)


@cli.group()
def connectors() -> None:
    """Manage Kafka Connect connectors from reviewed YAML files.

    \b
    Example:
        ecst connectors apply -f connectors/users.yaml
    """


@connectors.command("apply")
@click.option("-f", "--file", "files", multiple=True, required=True, type=click.Path(),
              help="Connector YAML file or folder of them; repeatable.")
@click.option("--wait", "wait_s", default=120.0, show_default=True,
              help="Seconds to wait for the connector and its tasks to be RUNNING (0: don't wait).")
@connect_url_option
@click.pass_obj
def apply_cmd(settings: Settings, files: tuple[str, ...], wait_s: float, connect_url: str | None
              ) -> None:
    """Create or update connectors, then wait until they run. Prints created/updated/unchanged.

    Every file is validated before anything is sent.

    \b
    Example:
        ecst connectors apply -f connectors/users.yaml
        ecst connectors apply -f connectors/ --connect-url http://connect:8083
    """
    defs = load_definitions(list(files))
    client = _client(settings, connect_url)
    for d in defs:
        change = apply_mod.apply(client, d, wait_s=wait_s)
        click.echo(f"connector/{change.name} {change.action}")


@connectors.command("plan")
@click.option("-f", "--file", "files", multiple=True, required=True, type=click.Path(),
              help="Connector YAML file or folder of them; repeatable.")
@connect_url_option
@click.pass_obj
def plan_cmd(settings: Settings, files: tuple[str, ...], connect_url: str | None) -> None:
    """Show what apply would change, key by key (secrets masked). Exit 2 if changes are pending.

    \b
    Example:
        ecst connectors plan -f connectors/
    """
    defs = load_definitions(list(files))
    client = _client(settings, connect_url)
    pending = False
    for d in defs:
        change = apply_mod.plan(client, d)
        action = "no change" if change.action == "unchanged" else change.action
        click.echo(f"connector/{change.name} {action}")
        for key, (old, new) in change.diff.items():
            masked_old = d.masked({key: old})[key] if old is not None else None
            masked_new = d.masked({key: new})[key] if new is not None else None
            if old is None:
                click.echo(f"  + {key}: {masked_new}")
            elif new is None:
                click.echo(f"  - {key}: {masked_old}")
            else:
                click.echo(f"  ~ {key}: {masked_old} -> {masked_new}")
        pending = pending or change.action != "unchanged"
    if pending:
        raise SystemExit(2)


@connectors.command("status")
@click.argument("name")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text")
@connect_url_option
@click.pass_obj
def status_cmd(settings: Settings, name: str, output: str, connect_url: str | None) -> None:
    """Show a connector's state and its tasks' states.

    \b
    Example:
        ecst connectors status users
    """
    status = _client(settings, connect_url).status(name)
    if status is None:
        raise click.ClickException(f"no connector named {name!r}")
    if output == "json":
        click.echo(json.dumps(status, indent=2))
        return
    c = status["connector"]
    click.echo(f"connector/{name} {c['state']} on {c.get('worker_id')}")
    for t in status.get("tasks", []):
        click.echo(f"  task {t['id']} {t['state']} on {t.get('worker_id')}")


@connectors.command("delete")
@click.argument("name")
@connect_url_option
@click.pass_obj
def delete_cmd(settings: Settings, name: str, connect_url: str | None) -> None:
    """Delete a connector (its replication slot stays in the database).

    \b
    Example:
        ecst connectors delete users
    """
    existed = _client(settings, connect_url).delete(name)
    click.echo(f"connector/{name} {'deleted' if existed else 'not found'}")
    if not existed:
        raise SystemExit(1)

"""`ecst connectors …`: connector definitions (YAML) applied to Kafka Connect, kubectl-style."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
import psycopg

from ecst.cli.options import cluster_options
from ecst.connectors import apply as apply_mod
from ecst.connectors import producer as producer_db
from ecst.connectors.client import ConnectClient
from ecst.connectors.definition import ConnectorDefinition, load_definitions, mask_config
from ecst.connectors.doctor import DEFAULT_MAX_RETAINED_WAL, FAIL, diagnose
from ecst.connectors.health import Deployment, tasks_of, trace_summary
from ecst.connectors.health import diagnose as connector_problem
from ecst.connectors.reset import drop_incremental_snapshot
from ecst.connectors.slots import drop_inactive_slot, slot_name, slot_status, wait_for_slot_inactive
from ecst.exceptions import ConnectError, ProducerError
from ecst.settings import Settings
from ecst.stack.local import producer_target

output_option = click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
                             show_default=True, help="Output format.")
files_option = click.option("-f", "--file", "files", multiple=True, required=True, type=click.Path(),
                            help="Connector YAML file or folder of them; repeatable.")
env_option = click.option("--env", "env", help="Merge the overlay env/<ENV>.yaml over the definitions.")


def key_check_options(f: Callable) -> Callable:
    """--producer-url / --skip-key-check on the commands that check captured tables' keys."""
    f = click.option("--skip-key-check", is_flag=True,
                     help="Do not check the captured tables' keys in the producer database (when "
                          "only Kafka Connect is reachable from here).")(f)
    return click.option("--producer-url", envvar="ECST_PRODUCER_URL",
                        help="The producer database (postgresql://…), read to check that every captured "
                             "table has a key. Default: the local stack's, for the local Connect.")(f)


def _check_keys(client: ConnectClient, defs: list[ConnectorDefinition], producer_url: str | None,
                skip: bool) -> None:
    """Refuse, before anything is sent, definitions capturing a table without a key. The local
    stack's database stands in for the producer only when Connect is the local stack's too:
    checking another cluster's connectors against it would prove nothing."""
    if skip:
        click.echo("Warning: the captured tables' keys were not checked (--skip-key-check): a table "
                   "without a primary key or message.key.columns fails the connector's task", err=True)
        return
    settings: Settings = click.get_current_context().obj
    local = client.url.rstrip("/") == f"http://127.0.0.1:{settings.connect_port}"
    target = producer_target(settings, producer_url) if producer_url or local else None
    apply_mod.check_keys(defs, target)


drop_slot_option = click.option(
    "--drop-slot", is_flag=True,
    help="Also drop the deleted connector's replication slot, once released (needs the producer database).")


def _delete_connector(client: ConnectClient, name: str, *, drop_slot: bool,
                      producer_url: str | None) -> dict[str, Any]:
    """Delete a connector. Its replication slot stays unless `drop_slot`: then it is dropped once
    the task has released it, the producer database reached before anything is deleted."""
    slot = slot_name(client.get_config(name) or {})
    conn = None
    if drop_slot and slot:
        target = producer_target(click.get_current_context().obj, producer_url)
        if target is None:
            raise ProducerError(f"--drop-slot needs the producer database to drop slot {slot}: pass "
                                "--producer-url or set ECST_PRODUCER_URL; nothing was deleted")
        conn = producer_db.connect(*target, purpose=f" to drop slot {slot}",
                                   fix="check --producer-url; nothing was deleted", autocommit=True)
    try:
        if not client.delete(name):
            raise ConnectError(f"no connector named {name!r} at {client.url}")
        if conn is None:
            if slot:
                click.echo(f"Warning: replication slot {slot} of connector {name} remains in the producer "
                           "database and retains WAL until it is dropped: SELECT pg_drop_replication_slot("
                           f"'{slot}') once nothing will resume from it (or delete with --drop-slot)",
                           err=True)
            return {"slot": slot, "slot_dropped": False}
        assert slot is not None  # a connection is opened only for a slot
        wait_for_slot_inactive(conn, slot)
        drop_inactive_slot(conn, slot)
        return {"slot": slot, "slot_dropped": True}
    finally:
        if conn is not None:
            conn.close()


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.group()
def connectors() -> None:
    """Manage Kafka Connect connectors from reviewed YAML files.

    \b
    Example:
        ecst connectors plan -f connectors/ --env prod
        ecst connectors apply -f connectors/ --env prod
    """


@connectors.command("apply")
@files_option
@env_option
@click.option("--wait", "wait_s", default=120.0, show_default=True,
              help="Seconds to wait for the connector and its tasks to be RUNNING (0: don't wait).")
@click.option("--dry-run", is_flag=True, help="Validate through Connect and show the plan; change nothing.")
@click.option("--prune", is_flag=True, help="Also delete connectors that no definition names any more.")
@click.option("--selector", default="*", show_default=True,
              help="Only prune connectors whose name matches this glob (for shared clusters).")
@click.option("--yes", is_flag=True,
              help="Do not ask before pruning, or before a destructive change (see plan).")
@drop_slot_option
@key_check_options
@output_option
@cluster_options
def apply_cmd(client: ConnectClient, files: tuple[str, ...], env: str | None, wait_s: float,
              dry_run: bool, prune: bool, selector: str, yes: bool, drop_slot: bool,
              producer_url: str | None, skip_key_check: bool, output: str) -> None:
    """Validate, create or update connectors, and wait until they run: created/updated/unchanged.

    Every file is checked before anything is sent; Connect's validation errors are listed per key.
    Every table a Debezium Postgres connector captures must have a key in the producer database
    (a primary key, a unique index on NOT NULL columns, or message.key.columns): a table without
    one is refused, since Debezium would send its changes without a key, which a compacted topic
    rejects. The producer database is --producer-url, else ECST_PRODUCER_URL, else the local
    stack's when Connect is too; when it is not known, apply refuses unless --skip-key-check.
    A connector or task that goes FAILED prints its trace and exits 1. A pruned connector's
    replication slot stays (a warning says so) unless --drop-slot.

    \b
    Example:
        ecst connectors apply -f connectors/users.yaml
        ecst connectors apply -f connectors/ --env prod --prune --selector 'users*' --yes
    """
    defs = load_definitions(list(files), env=env)
    # reach Connect first: its errors come before the producer database's
    changes = [apply_mod.plan(client, d) for d in defs]
    _check_keys(client, defs, producer_url, skip_key_check)
    if not dry_run:
        for d, change in zip(defs, changes, strict=True):
            if apply_mod.destructive(change):
                apply_mod.validate(client, d)  # an invalid config is reported as invalid first
                _confirm_destructive(change, yes)
    results = []
    for d in defs:
        change = apply_mod.apply(client, d, wait_s=wait_s, dry_run=dry_run)
        suffix = " (dry run)" if dry_run and change.action != "unchanged" else ""
        results.append({"name": change.name, "action": change.action, "dry_run": dry_run})
        if output == "text":
            click.echo(f"connector/{change.name} {change.action}{suffix}")
    if prune:
        for name in apply_mod.prunable(client, defs, selector):
            if dry_run:
                verb = "deleted (dry run)"
            elif yes or (sys.stdin.isatty() and click.confirm(f"delete connector {name}?")):
                slot = _delete_connector(client, name, drop_slot=drop_slot, producer_url=producer_url)
                verb = "deleted" + (f" (slot {slot['slot']} dropped)" if slot["slot_dropped"] else "")
            else:
                raise click.ClickException(f"connector {name} would be pruned: confirm, or pass --yes")
            results.append({"name": name, "action": verb.split()[0], "dry_run": dry_run})
            if output == "text":
                click.echo(f"connector/{name} {verb}")
    if output == "json":
        _json(results)


def _confirm_destructive(change: apply_mod.Change, yes: bool) -> None:
    """Ask before an update that re-snapshots, skips changes or orphans a slot; refuse without
    --yes when nobody can be asked."""
    risky = apply_mod.destructive(change)
    if not risky or yes:
        return
    keys = ", ".join(risky)
    if sys.stdin.isatty():
        for key, why in risky.items():
            click.echo(f"connector/{change.name}: changing {key}: {why}", err=True)
        if click.confirm(f"apply the change of {keys} to connector {change.name}?"):
            return
    raise click.ClickException(
        f"connector {change.name}: changing {keys} is destructive (`ecst connectors plan` says why); "
        "nothing was changed: confirm, or pass --yes")


@connectors.command("plan")
@files_option
@env_option
@key_check_options
@output_option
@cluster_options
def plan_cmd(client: ConnectClient, files: tuple[str, ...], env: str | None, producer_url: str | None,
             skip_key_check: bool, output: str) -> None:
    """Show what apply would change, key by key (secrets masked). Exit 2 if changes are pending.

    A change of slot.name, publication.name, topic.prefix, snapshot.mode, database.dbname or
    plugin.name is marked destructive, with what it does (a new snapshot, skipped changes, a slot
    left behind): apply asks before it, or refuses without --yes when it cannot ask.
    Refuses (exit 1) what apply would refuse: a captured table without a key (see apply).

    \b
    Example:
        ecst connectors plan -f connectors/ --env prod
    """
    defs = load_definitions(list(files), env=env)
    changes = [apply_mod.plan(client, d) for d in defs]
    _check_keys(client, defs, producer_url, skip_key_check)
    pending, results = False, []
    for d, change in zip(defs, changes, strict=True):
        diff = {k: [None if old is None else d.masked({k: old})[k],
                    None if new is None else d.masked({k: new})[k]]
                for k, (old, new) in change.diff.items()}
        risky = apply_mod.destructive(change)
        results.append({"name": change.name, "action": change.action, "diff": diff,
                        "destructive": risky})
        pending = pending or change.action != "unchanged"
        if output == "json":
            continue
        action = "no change" if change.action == "unchanged" else change.action
        click.echo(f"connector/{change.name} {action}")
        for key, (old, new) in diff.items():
            if old is None:
                click.echo(f"  + {key}: {new}")
            elif new is None:
                click.echo(f"  - {key}: {old}")
            else:
                click.echo(f"  ~ {key}: {old} -> {new}")
            if key in risky:
                click.echo(f"    destructive: {risky[key]}")
    if output == "json":
        _json(results)
    if pending:
        raise SystemExit(2)


@connectors.command("render")
@files_option
@env_option
@click.option("--format", "fmt", type=click.Choice(["strimzi"]), default="strimzi", show_default=True,
              help="Target format.")
@click.option("--cluster", default="ecst-connect", show_default=True,
              help="Name of the Strimzi KafkaConnect the connectors run on (strimzi.io/cluster).")
@click.option("--namespace", help="Kubernetes namespace to put in the resources.")
@click.option("--api-version", "api_version", default="v1", show_default=True, metavar="v1|v1beta2",
              help="kafka.strimzi.io version: v1 (Strimzi 0.49 and later; the only one Strimzi 1.0 "
                   "serves) or v1beta2 (older operators).")
def render_cmd(files: tuple[str, ...], env: str | None, fmt: str, cluster: str,
               namespace: str | None, api_version: str) -> None:
    """Render the definitions as Kubernetes resources (Strimzi KafkaConnector), to stdout.

    \b
    Example:
        ecst connectors render -f connectors/ --env prod --cluster ecst-connect | kubectl apply -f -
        ecst connectors render -f connectors/ --api-version v1beta2   # Strimzi before 0.49
    """
    from ecst.connectors.strimzi import api_version as check_version
    from ecst.connectors.strimzi import render

    check_version(api_version)  # before the files are read: the option is the first thing wrong
    click.echo(render(load_definitions(list(files), env=env), cluster, namespace, api_version), nl=False)


@connectors.command("doctor")
@files_option
@env_option
@click.option("--producer-url", envvar="ECST_PRODUCER_URL",
              help="The producer database (postgresql://…). Default: the local stack's.")
@click.option("--role", help="The connector's database role, when database.user is a worker reference.")
@click.option("--max-retained-wal", default=DEFAULT_MAX_RETAINED_WAL, show_default=True,
              help="Bytes of WAL a slot may retain before it is reported.")
@output_option
@cluster_options
def doctor_cmd(client: ConnectClient, files: tuple[str, ...], env: str | None, producer_url: str | None,
               role: str | None, max_retained_wal: int, output: str) -> None:
    """Check the producer database for what each Debezium Postgres connector needs; exit 1 on a failure.

    Read-only. Every finding says how to fix it. Kafka Connect is asked (GET only) whether each
    connector is deployed, its tasks' states and whether it has offsets, to tell a lost
    replication slot from one not created yet.

    \b
    Example:
        ecst connectors doctor -f connectors/users.yaml --role ecst_connector
    """
    settings: Settings = click.get_current_context().obj
    target = producer_target(settings, producer_url)
    if target is None:
        raise ProducerError("doctor needs the producer database: pass --producer-url or set "
                            "ECST_PRODUCER_URL")
    failed, report = False, []
    for d in load_definitions(list(files), env=env):
        if slot_name(d.config) is None:
            continue
        try:
            deployed: Deployment | None = Deployment.read(client, d.name)
        except ConnectError:  # the database checks still stand; the slot check says what is unknown
            deployed = None
        with producer_db.connect(*target) as conn:
            try:
                findings = diagnose(conn, d, role=role, max_retained_wal=max_retained_wal, deployed=deployed)
            except psycopg.OperationalError as exc:  # the connection was lost during the checks
                raise ProducerError(f"lost the producer database {producer_db.describe(target[0])} during "
                                    f"the checks ({producer_db.first_line(exc)}): check that it is running, "
                                    "then re-run doctor") from exc
        failed = failed or any(f.status == FAIL for f in findings)
        report.append({"connector": d.name, "findings": [f.as_dict() for f in findings]})
        if output == "text":
            click.echo(f"connector/{d.name}")
            for f in findings:
                click.echo(f"  {f.status.upper():<4} {f.check}: {f.message}")
                if f.fix and f.status != "ok":
                    click.echo(f"       fix: {f.fix}")
    if output == "json":
        _json(report)
    if failed:
        raise SystemExit(1)


@connectors.command("list")
@output_option
@cluster_options
def list_cmd(client: ConnectClient, output: str) -> None:
    """List the cluster's connectors with their state and their tasks' states.

    \b
    Example:
        ecst connectors list -o json
    """
    rows = []
    for name in client.connectors():
        st = client.status(name) or {}
        rows.append({"name": name, "state": st.get("connector", {}).get("state", "UNKNOWN"),
                     "tasks": [t.get("state") for t in st.get("tasks", [])]})
    if output == "json":
        _json(rows)
        return
    for r in rows:
        click.echo(f"{r['name']:<30} {r['state']:<10} tasks: {' '.join(r['tasks']) or '-'}")


def _status(client: ConnectClient, name: str) -> dict:
    status = client.status(name)
    if status is None:
        raise ConnectError(f"no connector named {name!r} at {client.url} (see `ecst connectors list`)")
    return status


def _slot(settings: Settings, config: dict[str, str]) -> dict | None:
    """The connector's replication slot as seen in the producer database, when reachable."""
    slot = slot_name(config)
    if slot is None:
        return None
    target = producer_target(settings)
    if target is None:
        return {"name": slot, "error": "set ECST_PRODUCER_URL to see the slot"}
    conninfo, password = target
    try:
        s = slot_status(conninfo, slot, password)
    except psycopg.Error as exc:  # a diagnostic: report it, never fail the command
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"name": slot, "error": f"producer database unreachable: {first}"}
    return {"name": s.name, "exists": s.exists, "active": s.active,
            "retained_wal_bytes": s.retained_wal_bytes}


def _has_offsets(client: ConnectClient, name: str) -> bool | None:
    try:
        return bool((client.offsets(name) or {}).get("offsets"))
    except ConnectError:
        return None


@connectors.command("status")
@click.argument("name")
@output_option
@cluster_options
def status_cmd(client: ConnectClient, name: str, output: str) -> None:
    """Show a connector's and its tasks' states and workers, a failed task's error in one line,
    its replication slot (active, retained WAL; for Debezium Postgres connectors, when the
    producer database is reachable), and, when something is wrong, the next step.

    \b
    Example:
        ecst connectors status users
    """
    status = _status(client, name)
    slot = _slot(click.get_current_context().obj, client.get_config(name) or {})
    exists = None if slot is None or "error" in slot else slot["exists"]
    # a missing slot is lost only if the connector streamed from it (it has offsets)
    offsets = _has_offsets(client, name) if exists is False else None
    if slot is not None and exists is False:
        slot["connector_has_offsets"] = offsets
    found = connector_problem(name, status, slot["name"] if slot else None, exists, offsets)
    if output == "json":
        _json({**status, "slot": slot, "diagnosis": found.as_dict() if found else None})
        return
    c = status["connector"]
    failed = f": {trace_summary(c.get('trace'))}" if c.get("state") == "FAILED" else ""
    click.echo(f"connector/{name} {c['state']} on {c.get('worker_id')}{failed}")
    for t in tasks_of(status):
        click.echo(f"  task {t.id} {t.state} on {t.worker}" + (f": {t.summary}" if t.summary else ""))
    if slot is not None:
        if "error" in slot:
            click.echo(f"  slot {slot['name']}: {slot['error']}")
        elif not slot["exists"]:
            lost = " (the connector's offsets point into it: it was dropped or lost)" if offsets else ""
            click.echo(f"  slot {slot['name']}: does not exist{lost}")
        else:
            click.echo(f"  slot {slot['name']}: {'active' if slot['active'] else 'INACTIVE'}, "
                       f"retains {slot['retained_wal_bytes']:,} bytes of WAL")
    if found is not None:
        click.echo(f"  next: {found.next}")


@connectors.command("describe")
@click.argument("name")
@output_option
@cluster_options
def describe_cmd(client: ConnectClient, name: str, output: str) -> None:
    """Show a connector's config (secrets masked), status and source offsets.

    \b
    Example:
        ecst connectors describe users -o json
    """
    status = _status(client, name)
    config = mask_config(client.get_config(name) or {})
    offsets = client.offsets(name).get("offsets", [])
    if output == "json":
        _json({"name": name, "config": config, "status": status, "offsets": offsets})
        return
    click.echo(f"Name:    {name}\nState:   {status['connector']['state']}\nType:    {status.get('type')}")
    click.echo("Tasks:   " + (", ".join(f"{t['id']}={t['state']}" for t in status.get("tasks", [])) or "-"))
    click.echo("Config:")
    for k, v in sorted(config.items()):
        click.echo(f"  {k}: {v}")
    click.echo("Offsets:")
    for o in offsets:
        click.echo(f"  {json.dumps(o.get('partition'))}: {json.dumps(o.get('offset'))}")


def _done(name: str, action: str, output: str) -> None:
    if output == "json":
        _json({"name": name, "action": action})
    else:
        click.echo(f"connector/{name} {action}")


def _simple(verb: str, doc: str, act: Callable[[ConnectClient, str], Any], done: str) -> None:
    @connectors.command(verb, help=doc)
    @click.argument("name")
    @output_option
    @cluster_options
    def command(client: ConnectClient, name: str, output: str) -> None:
        _status(client, name)
        act(client, name)
        _done(name, done, output)


_simple("pause", "Pause a connector and its tasks.\n\n\b\nExample:\n    ecst connectors pause users",
        ConnectClient.pause, "paused")
_simple("resume", "Resume a paused or stopped connector.\n\n\b\nExample:\n    ecst connectors resume users",
        ConnectClient.resume, "resumed")
_simple("stop", "Stop a connector (tasks shut down; config and offsets kept), e.g. before resetting "
        "its offsets.\n\n\b\nExample:\n    ecst connectors stop users", ConnectClient.stop, "stopped")


@connectors.command("restart")
@click.argument("name")
@click.option("--failed-only", is_flag=True, help="Restart only the connector or tasks that FAILED.")
@output_option
@cluster_options
def restart_cmd(client: ConnectClient, name: str, failed_only: bool, output: str) -> None:
    """Restart a connector and its tasks.

    \b
    Example:
        ecst connectors restart users --failed-only
    """
    _status(client, name)
    client.restart(name, only_failed=failed_only)
    _done(name, f"restarted{' (failed only)' if failed_only else ''}", output)


@connectors.command("delete")
@click.argument("name")
@drop_slot_option
@click.option("--producer-url", envvar="ECST_PRODUCER_URL",
              help="The producer database, for --drop-slot. Default: the local stack's.")
@output_option
@cluster_options
def delete_cmd(client: ConnectClient, name: str, drop_slot: bool, producer_url: str | None,
               output: str) -> None:
    """Delete a connector. Its replication slot stays in the producer database, retaining WAL, and
    a warning says so; --drop-slot drops it once the task has released it (a connector created
    again then snapshots again).

    \b
    Example:
        ecst connectors delete users
        ecst connectors delete users --drop-slot --producer-url postgresql://admin@db/producer
    """
    slot = _delete_connector(client, name, drop_slot=drop_slot, producer_url=producer_url)
    if output == "json":
        _json({"name": name, "action": "deleted", **slot})
    else:
        click.echo(f"connector/{name} deleted" + (f"; slot {slot['slot']} dropped" if slot["slot_dropped"]
                                                  else ""))


@connectors.group("offsets")
def offsets_group() -> None:
    """Read, reset or repair a connector's source offsets (KIP-875; reset needs the connector STOPPED).

    \b
    Example:
        ecst connectors stop users && ecst connectors offsets reset users
    """


@offsets_group.command("get")
@click.argument("name")
@output_option
@cluster_options
def offsets_get(client: ConnectClient, name: str, output: str) -> None:
    """Show a connector's source offsets.

    \b
    Example:
        ecst connectors offsets get users -o json
    """
    offsets = client.offsets(name).get("offsets", [])
    if output == "json":
        _json(offsets)
        return
    for o in offsets:
        click.echo(f"{json.dumps(o.get('partition'))}: {json.dumps(o.get('offset'))}")


@offsets_group.command("drop-snapshot")
@click.argument("name")
@output_option
@cluster_options
def offsets_drop_snapshot(client: ConnectClient, name: str, output: str) -> None:
    """Start a connector again without the incremental snapshot its offsets hold, keeping its
    streaming position: stops it, alters its offsets and resumes it (one STOPPED stays so). For a task
    that fails at every start while Debezium resumes a snapshot it cannot read, e.g. one whose
    --where Postgres rejects (docs/runbook.md, "Connector task failed").

    \b
    Example:
        ecst connectors offsets drop-snapshot users
    """
    _status(client, name)  # it exists
    dropped, resumed = drop_incremental_snapshot(client, name)
    what = ("incremental snapshot dropped from its offsets" if dropped
            else "offsets hold no incremental snapshot")
    then = "stopped and resumed" if resumed else f"still STOPPED: `ecst connectors resume {name}`"
    _done(name, f"{what}; {then}", output)


@offsets_group.command("reset")
@click.argument("name")
@output_option
@cluster_options
def offsets_reset(client: ConnectClient, name: str, output: str) -> None:
    """Forget a stopped connector's offsets: on resume it starts over (e.g. snapshots again).

    \b
    Example:
        ecst connectors offsets reset users
    """
    state = _status(client, name)["connector"]["state"]
    if state != "STOPPED":
        raise ConnectError(f"connector {name} is {state}: stop it first (`ecst connectors stop {name}`)")
    client.reset_offsets(name)
    _done(name, "offsets reset", output)


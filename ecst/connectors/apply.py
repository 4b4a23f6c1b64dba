"""plan / apply: compare a definition with the cluster, check it against the producer database,
send it, wait until it runs."""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field

import psycopg

from ecst.connectors import producer as producer_db
from ecst.connectors.client import ConnectClient
from ecst.connectors.definition import ConnectorDefinition
from ecst.connectors.keys import require_keys
from ecst.connectors.slots import slot_name
from ecst.exceptions import ConnectError, ConnectorFailedError, ProducerError, ValidationError

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
STALE_GRACE_S = 20.0  # how long a task FAILED before a config update may still be reported so


@dataclass(frozen=True)
class Change:
    """What apply would do (or did) to one connector; `diff` maps key -> (current, desired)."""

    name: str
    action: str
    diff: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


# Keys of a Debezium Postgres connector whose change, once it has run, does more than reconfigure
# it: plan marks them and apply asks for --yes. Debezium keys its stored offsets by topic.prefix.
DESTRUCTIVE = {
    "slot.name": "a new replication slot is created where the WAL is now: changes the old slot still "
                 "held are skipped, and the old slot stays behind, pinning WAL until it is dropped",
    "publication.name": "the slot decodes through another publication: tables it lacks stop being "
                        "captured without an error",
    "topic.prefix": "Debezium finds no offsets under the new prefix: it snapshots again into new "
                    "topics, and consumers of the old topics see nothing more",
    "snapshot.mode": "decides what the next start snapshots: 'always' re-reads every table on every "
                     "restart, 'no_data' or 'never' never fill a new topic",
    "database.dbname": "another database: the slot and publication of the old one are left behind",
    "plugin.name": "the slot's output plugin cannot change: the connector fails until the slot is "
                   "dropped and the table snapshotted again",
}


def destructive(change: Change) -> dict[str, str]:
    """The keys of an update that re-snapshot, skip changes or orphan a slot, with why."""
    if change.action != UPDATED:
        return {}
    return {k: DESTRUCTIVE[k] for k in change.diff if k in DESTRUCTIVE}


def diff_configs(current: dict[str, str], desired: dict[str, str]) -> dict[str, tuple]:
    """Key-by-key differences, ignoring the `name` key Connect adds to stored configs."""
    keys = (set(current) | set(desired)) - {"name"}
    return {k: (current.get(k), desired.get(k)) for k in sorted(keys)
            if current.get(k) != desired.get(k)}


def plan(client: ConnectClient, definition: ConnectorDefinition) -> Change:
    """What `apply` would do, without changing anything."""
    current = client.get_config(definition.name)
    if current is None:
        return Change(definition.name, CREATED, {k: (None, v) for k, v in definition.config.items()})
    diff = diff_configs(current, definition.config)
    return Change(definition.name, UPDATED if diff else UNCHANGED, diff)


def check_keys(definitions: list[ConnectorDefinition],
               producer: tuple[str, str | None] | None) -> None:
    """Refuse (ProducerError) any Debezium Postgres definition that captures a table whose change
    events would have no key: no primary key, no usable unique index, and not covered by
    `message.key.columns` (see `keys.py`). Run it before anything is sent to Connect.

    `producer` is the producer database's (conninfo, password). When it is None (not known where
    this runs) the check cannot be made, and that is refused too: the CLI's `--skip-key-check`
    is the explicit way to go without it."""
    checked = [d for d in definitions if slot_name(d.config) is not None]
    if not checked:
        return
    if producer is None:
        raise ProducerError(
            f"connector {checked[0].name} captures tables of a producer database that is not known here, "
            "and apply first checks that each has a key: pass --producer-url (or set ECST_PRODUCER_URL; "
            "any role that can log in will do, it only reads the catalog), or --skip-key-check to go "
            "without the check")
    conninfo, password = producer
    conn = producer_db.connect(conninfo, password, purpose=" to check the captured tables' keys",
                               fix="fix --producer-url (or ECST_PRODUCER_URL), or pass --skip-key-check "
                                   "to go without the check")
    try:
        with conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            for d in checked:
                require_keys(conn, d)
    except psycopg.Error as exc:
        raise ProducerError(f"the producer database refused the key check: "
                            f"{producer_db.first_line(exc)}") from exc


def validate(client: ConnectClient, definition: ConnectorDefinition) -> None:
    """Raise ValidationError, with Connect's errors per key, if the config is rejected."""
    errors = client.validate(definition.config["connector.class"],
                             {**definition.config, "name": definition.name})
    if errors:
        where = f" ({definition.source})" if definition.source else ""
        raise ValidationError(f"connector {definition.name}{where} is invalid; nothing was changed:",
                              errors)


def apply(client: ConnectClient, definition: ConnectorDefinition, *, wait_s: float = 120.0,
          dry_run: bool = False) -> Change:
    """Validate, then idempotent `PUT /connectors/{name}/config`, then wait until the connector
    and its tasks run. With `dry_run`, validate and plan only."""
    change = plan(client, definition)
    stale: set[tuple[int, str]] = set()
    if change.action != UNCHANGED:
        validate(client, definition)
        if not dry_run:
            stale = _failed_tasks(client.status(definition.name)) if change.action == UPDATED else set()
            client.put_config(definition.name, definition.config)
    if wait_s > 0 and not dry_run:
        wait_running(client, definition.name, timeout_s=wait_s, stale=stale)
    return change


def _failed_tasks(status: dict | None) -> set[tuple[int, str]]:
    return {(int(t.get("id", 0)), str(t.get("trace"))) for t in (status or {}).get("tasks", [])
            if t.get("state") == "FAILED"}


def prunable(client: ConnectClient, definitions: list[ConnectorDefinition],
             selector: str = "*") -> list[str]:
    """Connectors in the cluster, matching the `selector` glob, that no definition names."""
    wanted = {d.name for d in definitions}
    return [n for n in client.connectors() if n not in wanted and fnmatch.fnmatchcase(n, selector)]


def wait_running(client: ConnectClient, name: str, *, timeout_s: float = 120.0,
                 stale: set[tuple[int, str]] | frozenset = frozenset()) -> dict:
    """Poll the status until the connector and all its tasks are RUNNING.

    Raises ConnectorFailedError (with the worker's trace) as soon as anything is FAILED. `stale`
    are the (task id, trace) that were FAILED before a config update: Connect restarts those
    tasks with the new config, and reports the old failure until then (up to STALE_GRACE_S).
    """
    deadline = time.monotonic() + timeout_s
    grace = time.monotonic() + STALE_GRACE_S
    last: dict | None = None
    while True:
        last = client.status(name)
        if last is not None:
            conn = last.get("connector", {})
            tasks = last.get("tasks", [])
            if conn.get("state") == "FAILED":
                raise ConnectorFailedError(f"connector {name} FAILED", conn.get("trace"))
            for t in tasks:
                old = (int(t.get("id", 0)), str(t.get("trace"))) in stale and time.monotonic() < grace
                if t.get("state") == "FAILED" and not old:
                    raise ConnectorFailedError(
                        f"connector {name} task {t.get('id')} FAILED on {t.get('worker_id')}",
                        t.get("trace"),
                    )
            if conn.get("state") == "RUNNING" and tasks and all(
                t.get("state") == "RUNNING" for t in tasks
            ):
                return last
        if time.monotonic() > deadline:
            state = (last or {}).get("connector", {}).get("state", "missing")
            raise ConnectError(
                f"connector {name} is not RUNNING after {timeout_s:.0f} s (state: {state}); "
                f"see `ecst connectors status {name}`"
            )
        time.sleep(0.5)

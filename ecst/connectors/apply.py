"""plan / apply: compare a definition with the cluster, send it, wait until it runs."""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field

from ecst.connectors.client import ConnectClient
from ecst.connectors.definition import ConnectorDefinition
from ecst.exceptions import ConnectError, ConnectorFailedError, ValidationError

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"


@dataclass(frozen=True)
class Change:
    """What apply would do (or did) to one connector; `diff` maps key -> (current, desired)."""

    name: str
    action: str
    diff: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


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
    if change.action != UNCHANGED:
        validate(client, definition)
        if not dry_run:
            client.put_config(definition.name, definition.config)
    if wait_s > 0 and not dry_run:
        wait_running(client, definition.name, timeout_s=wait_s)
    return change


def prunable(client: ConnectClient, definitions: list[ConnectorDefinition],
             selector: str = "*") -> list[str]:
    """Connectors in the cluster, matching the `selector` glob, that no definition names."""
    wanted = {d.name for d in definitions}
    return [n for n in client.connectors() if n not in wanted and fnmatch.fnmatchcase(n, selector)]


def wait_running(client: ConnectClient, name: str, *, timeout_s: float = 120.0) -> dict:
    """Poll the status until the connector and all its tasks are RUNNING.

    Raises ConnectorFailedError (with the worker's trace) as soon as anything is FAILED.
    """
    deadline = time.monotonic() + timeout_s
    last: dict | None = None
    while True:
        last = client.status(name)
        if last is not None:
            conn = last.get("connector", {})
            tasks = last.get("tasks", [])
            if conn.get("state") == "FAILED":
                raise ConnectorFailedError(f"connector {name} FAILED", conn.get("trace"))
            for t in tasks:
                if t.get("state") == "FAILED":
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

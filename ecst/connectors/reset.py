"""Resets a connector so it takes a new initial snapshot: stop it, drop its slot, forget its offsets;
or forgets only the incremental snapshot its offsets hold."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ecst.connectors.client import ConnectClient
from ecst.connectors.slots import drop_inactive_slot, wait_for_slot_inactive
from ecst.exceptions import ConnectError, EcstError, RebuildError

log = logging.getLogger(__name__)

SNAPSHOT_MODES_FOR_FRESH = {"initial", "always", "when_needed"}  # a reset connector snapshots again
STOP_TIMEOUT_S = 60.0


INCREMENTAL_KEYS = "incremental_snapshot_"  # Debezium's offset keys of an incremental snapshot in progress


def without_incremental_snapshot(offsets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The source offsets (Connect's `{"partition", "offset"}` entries) that hold an incremental
    snapshot in progress, with its keys removed: the streaming position stays as it is. Debezium
    resumes such a snapshot when its task starts; one it cannot read fails the task at every start."""
    changed = []
    for entry in offsets:
        offset = entry.get("offset") or {}
        kept = {k: v for k, v in offset.items() if not k.startswith(INCREMENTAL_KEYS)}
        if len(kept) < len(offset):
            changed.append({"partition": entry.get("partition"), "offset": kept})
    return changed


def connector_state(client: ConnectClient, name: str) -> str:
    """The connector's state as Connect reports it (UNKNOWN when it does not say)."""
    status = client.status(name) or {}
    return str((status.get("connector") or {}).get("state", "UNKNOWN"))


def stop_connector(client: ConnectClient, name: str, error: type[EcstError] = ConnectError) -> None:
    """Stop connector `name` (KIP-875) and wait until Connect reports it STOPPED, or raise `error`."""
    client.stop(name)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while connector_state(client, name) != "STOPPED":
        if time.monotonic() > deadline:
            raise error(f"connector {name!r} did not stop within {STOP_TIMEOUT_S:.0f} s "
                        "(`ecst connectors status`)")
        time.sleep(0.5)


def drop_incremental_snapshot(client: ConnectClient, name: str) -> tuple[bool, bool]:
    """Start connector `name` again without the incremental snapshot its offsets may hold, keeping
    its streaming position: stop it, remove that snapshot from its offsets as they are once it
    stopped, and resume it (new tasks), unless it was STOPPED already. (dropped, resumed)."""
    was_stopped = connector_state(client, name) == "STOPPED"
    if not was_stopped:
        stop_connector(client, name)
    changed = without_incremental_snapshot(client.offsets(name).get("offsets", []))
    if changed:
        client.alter_offsets(name, changed)
        log.info("connector %s: incremental snapshot dropped from its offsets %s", name, changed)
    if not was_stopped:
        client.resume(name)
    return bool(changed), not was_stopped


def reset_connector(client: ConnectClient, name: str, config: dict[str, str],
                    producer: Callable[[], Any] | None = None) -> None:
    """Stop connector `name`, drop its replication slot (when `producer`, which opens a connection
    to the producer database, is given), delete its offsets and resume it: it takes a new initial
    snapshot on a new slot, then streams. Refused for a `snapshot.mode` that would not snapshot."""
    mode = config.get("snapshot.mode", "initial")
    if mode not in SNAPSHOT_MODES_FOR_FRESH:
        raise RebuildError(f"connector {name!r} has snapshot.mode={mode}: a reset connector "
                           f"would not snapshot; use one of {sorted(SNAPSHOT_MODES_FOR_FRESH)}")
    stop_connector(client, name, RebuildError)
    slot = config.get("slot.name", "debezium")
    if producer is not None:
        with producer() as conn:
            wait_for_slot_inactive(conn, slot)
            drop_inactive_slot(conn, slot)
        log.info("dropped replication slot %s: the connector creates a new one", slot)
    else:
        log.warning("no producer database given: slot %s is kept; the new snapshot then streams "
                    "from the slot's position (duplicates are harmless)", slot)
    client.reset_offsets(name)
    client.resume(name)
    log.info("connector %s reset: it takes a new initial snapshot", name)

"""Deleting a connector never forgets its replication slot silently: `connectors delete` and
`apply --prune` warn that it remains, and `--drop-slot` drops it once released."""

import json
import uuid

from tests.integration.cli import ecst, write
from tests.integration.conftest import Capture


def _slot_exists(capture):
    return capture.conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                (capture.definition.config["slot.name"],)).fetchone() is not None


def test_delete_warns_that_the_slot_remains(capture):
    capture.create(rows=3)
    capture.apply()
    slot = capture.definition.config["slot.name"]
    r = ecst("connectors", "delete", capture.definition.name)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"connector/{capture.definition.name} deleted\n"
    assert r.stderr.startswith(f"Warning: replication slot {slot} of connector {capture.definition.name} "
                               "remains in the producer database and retains WAL until it is dropped")
    assert _slot_exists(capture)  # capture.close() drops it


def test_delete_and_prune_with_drop_slot_drop_it(capture, stack, tmp_path):
    pruned, kept = (Capture(stack, uuid.uuid4().hex[:10]) for _ in range(2))
    try:
        for c in (capture, pruned):
            c.create(rows=3)
            c.apply()
        r = ecst("connectors", "delete", capture.definition.name, "--drop-slot", "-o", "json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"name": capture.definition.name, "action": "deleted",
                                        "slot": capture.definition.config["slot.name"], "slot_dropped": True}
        assert r.stderr == "" and not _slot_exists(capture)

        # apply a file that names another connector: --prune deletes `pruned`, --drop-slot drops its slot
        kept.create(rows=3)
        f = write(tmp_path / "c.yaml", kept.doc)
        r = ecst("connectors", "apply", "-f", str(f), "--prune", "--selector", pruned.definition.name,
                 "--yes", "--drop-slot")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"connector/{pruned.definition.name} deleted (slot {pruned.definition.config['slot.name']} " \
               "dropped)" in r.stdout
        assert not _slot_exists(pruned) and _slot_exists(kept)
    finally:
        pruned.close()
        kept.close()

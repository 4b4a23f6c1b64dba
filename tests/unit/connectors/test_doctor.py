"""The doctor's slot check: it combines the producer's slot with what Kafka Connect says of the
connector. (The database checks run on the real stack: tests/integration/test_doctor.py.)"""

import pytest

from ecst.connectors.doctor import FAIL, OK, WARN, heartbeat_table, slot_finding
from ecst.connectors.health import Deployment
from tests.unit.connectors.test_health import LOST, status


def test_a_slot_missing_although_the_connector_streamed_from_it_fails_with_the_recovery():
    deployed = Deployment(True, status("RUNNING", ("FAILED", LOST)), has_offsets=True)
    f = slot_finding("users", "ecst_users", None, deployed)
    assert f.status == FAIL and f.message.startswith(
        "slot ecst_users does not exist, but connector users has streamed from it (its offsets hold a "
        "position in it): the slot was dropped or lost; task 0 is FAILED: io.debezium.DebeziumException")
    assert f.fix.endswith('`ecst rebootstrap fresh -c <consumer config> --connector users` '
                          '(docs/runbook.md, "Replication slot lost")')


def test_a_slot_not_created_yet_is_fine_and_an_unknown_one_is_a_warning():
    assert slot_finding("users", "s", None, Deployment(False)).status == OK
    assert slot_finding("users", "s", None, Deployment(True, status("STOPPED"))).status == WARN
    unknown = slot_finding("users", "s", None, None)  # Connect unreachable
    assert unknown.status == WARN and "could not be asked" in unknown.message


def test_an_existing_slot_is_ok_when_active_and_says_why_when_not():
    running = Deployment(True, status("RUNNING", ("RUNNING", None)), True)
    assert slot_finding("users", "s", True, running) == slot_finding("users", "s", True, None)
    assert slot_finding("users", "s", True, running).status == OK
    stopped = slot_finding("users", "s", False, Deployment(True, status("STOPPED"), True))
    assert stopped.status == WARN and stopped.fix == "ecst connectors resume users"
    orphan = slot_finding("users", "s", False, Deployment(False))
    assert orphan.status == WARN and "pg_drop_replication_slot('s')" in orphan.fix
    failed = slot_finding("users", "s", False, Deployment(True, status("RUNNING", ("FAILED", "boom")), True))
    assert failed.status == FAIL and failed.message == "slot s is INACTIVE, and connector users: task 0 is " \
        "FAILED: boom"
    assert "ecst connectors restart users --failed-only" in failed.fix


def test_an_invalidated_slot_is_lost_too():
    running = Deployment(True, status("RUNNING", ("RUNNING", None)), True)
    f = slot_finding("users", "s", False, running, wal_status="lost")
    assert f.status == FAIL and "max_slot_wal_keep_size" in f.message and "rebootstrap fresh" in f.fix
    assert slot_finding("users", "s", True, running, wal_status="reserved").status == OK


@pytest.mark.parametrize(("query", "table"), [
    ("INSERT INTO public.ecst_heartbeat (id, ts) VALUES (1, now()) ON CONFLICT (id) DO NOTHING",
     "public.ecst_heartbeat"),
    ("update Heartbeat set ts = now()", "public.heartbeat"),
    ('  INSERT INTO "Ops"."Beat ""1""" VALUES (1)', 'Ops.Beat "1"'),
    ("insert into ops . beat values (1)", "ops.beat"),
])
def test_the_table_a_heartbeat_action_query_writes(query, table):
    assert heartbeat_table(query) == table


@pytest.mark.parametrize("query", [None, "", "SELECT 1", "WITH x AS (SELECT 1) INSERT INTO t VALUES (1)",
                                   "CALL beat()"])
def test_a_heartbeat_action_query_that_is_no_plain_write_names_no_table(query):
    assert heartbeat_table(query) is None

"""A connector's health from Connect's status: failed tasks in one line, a lost slot told apart
from one not created yet, and the next step."""

from pathlib import Path

from ecst.connectors.health import (
    SLOT_LOST,
    TASK_FAILED,
    Deployment,
    diagnose,
    postgres_error_in_log,
    tasks_of,
    trace_summary,
)

# What Debezium 3.6.1's task reported after its slot was dropped while it was stopped (shortened).
LOST = ("io.debezium.DebeziumException: The connector is trying to read change stream starting at "
        "PostgresOffsetContext [sourceInfoSchema=Schema{io.debezium.connector.postgresql.Source:STRUCT}, "
        "sourceInfo=source_info[server='producer'db='producer', lsn=LSN{0/20C1E68}, txId=839], "
        "lastSnapshotRecord=false, lastCompletelyProcessedLsn=null], but this is no longer available on the "
        "server. Reconfigure the connector to use a snapshot mode when needed.\n"
        "\tat io.debezium.connector.common.BaseSourceTask.validateSchemaHistory(BaseSourceTask.java:164)\n"
        "\tat java.base/java.lang.Thread.run(Thread.java:840)\n")
OTHER = ("org.apache.kafka.connect.errors.ConnectException: An exception occurred in the change event "
         "producer. This connector will be stopped.\n\tat io.debezium.X.y(X.java:1)\n"
         "Caused by: org.postgresql.util.PSQLException: ERROR: publication \"ecst_users\" does not exist\n"
         "\tat org.postgresql.Z(Z.java:2)\n")

# The CI failure of a rebuild whose --where Postgres rejected, the signal sent through Kafka (shortened).
RACE = ("org.apache.kafka.connect.errors.ConnectException: An exception occurred in the change event "
        "producer. This connector will be stopped.\n\tat io.debezium.X.y(X.java:1)\n"
        "Caused by: java.lang.NullPointerException: Cannot invoke \"io.debezium.pipeline.source.snapshot."
        "incremental.DataCollection.getId()\" because the return value of \"io.debezium.pipeline.source."
        "snapshot.incremental.IncrementalSnapshotContext.currentDataCollectionId()\" is null\n"
        "\tat io.debezium.pipeline.source.snapshot.incremental.AbstractIncrementalSnapshotChangeEventSource"
        ".readChunk(AbstractIncrementalSnapshotChangeEventSource.java:352)\n")


def status(state="RUNNING", *tasks):
    return {"connector": {"state": state, "worker_id": "w:1"},
            "tasks": [{"id": i, "state": s, "worker_id": "w:1", **({"trace": t} if t else {})}
                      for i, (s, t) in enumerate(tasks)]}


def test_a_trace_becomes_one_line_with_its_root_cause_and_without_state_dumps():
    assert trace_summary(LOST) == (
        "io.debezium.DebeziumException: The connector is trying to read change stream starting at "
        "PostgresOffsetContext […], but this is no longer available on the server. Reconfigure the "
        "connector to use a snapshot mode when needed.")
    assert trace_summary(OTHER) == (
        "org.apache.kafka.connect.errors.ConnectException: An exception occurred in the change event "
        "producer. This connector will be stopped. (caused by org.postgresql.util.PSQLException: ERROR: "
        "publication \"ecst_users\" does not exist)")
    assert trace_summary(None) == "no trace" and len(trace_summary("x" * 1000)) == 400


def test_a_failed_task_whose_slot_is_gone_leads_to_a_fresh_rebuild():
    found = diagnose("users", status("RUNNING", ("FAILED", LOST)), "ecst_users")
    assert found.problem == SLOT_LOST
    assert found.message.startswith("replication slot ecst_users is gone; task 0 is FAILED: "
                                    "io.debezium.DebeziumException: The connector is trying")
    assert "`ecst rebootstrap fresh -c <consumer config> --connector users`" in found.next
    assert 'docs/runbook.md, "Replication slot lost"' in found.next


def test_an_invalidated_slot_reads_as_lost():
    trace = ('org.postgresql.util.PSQLException: ERROR: can no longer get changes from replication slot '
             '"ecst_users"\n  Detail: This slot has been invalidated because it exceeded the maximum '
             'reserved size.\n\tat x')
    assert diagnose("users", status("RUNNING", ("FAILED", trace)), "ecst_users").problem == SLOT_LOST


def test_a_missing_slot_is_lost_only_when_the_connector_streamed_from_it():
    stopped = status("STOPPED")
    assert diagnose("users", stopped, "ecst_users", slot_exists=False, has_offsets=False) is None
    lost = diagnose("users", stopped, "ecst_users", slot_exists=False, has_offsets=True)
    assert lost.problem == SLOT_LOST and "offsets point into it" in lost.message
    assert diagnose("users", status("RUNNING", ("RUNNING", None)), "ecst_users", True, True) is None


def test_another_failure_names_the_restart_after_the_fix():
    found = diagnose("users", status("RUNNING", ("RUNNING", None), ("FAILED", OTHER)))
    assert found.problem == TASK_FAILED and found.message.startswith("task 1 is FAILED: ")
    assert "`ecst connectors restart users --failed-only`" in found.next
    failed = diagnose("users", {"connector": {"state": "FAILED", "trace": OTHER}, "tasks": []})
    assert failed.problem == TASK_FAILED and "publication" in failed.message
    assert [t.summary for t in tasks_of(status("RUNNING", ("RUNNING", None)))] == [None]


def test_debeziums_snapshot_race_is_named_with_the_restart_and_the_way_around_it():
    found = diagnose("users", status("RUNNING", ("FAILED", RACE)), "ecst_users")
    assert found.problem == TASK_FAILED and found.message.startswith("task 0 is FAILED: ")
    assert found.message.endswith("Debezium's incremental-snapshot race (DBZ-8674), met by a signal sent "
                                  "through Kafka")
    assert "needs no fix: `ecst connectors restart users --failed-only`" in found.next
    assert "--producer-url" in found.next and "signal table" in found.next
    # another NullPointerException is not that race
    other = RACE.replace("IncrementalSnapshotContext.currentDataCollectionId()", "Foo.bar()")
    assert "DBZ-8674" not in diagnose("users", status("RUNNING", ("FAILED", other))).message



def test_a_snapshot_the_offsets_hold_and_postgres_rejects_leads_to_dropping_it_not_to_a_restart():
    # what Debezium 3.6.1 reported at every start of a task whose offsets held a snapshot with a bad filter
    at_start = RACE + ("\tat io.debezium.pipeline.source.snapshot.incremental."
                       "AbstractIncrementalSnapshotChangeEventSource.init(AbstractIncrementalSnapshotChange"
                       "EventSource.java:236)\n\tat io.debezium.pipeline.ChangeEventSourceCoordinator."
                       "lambda$initStreamEvents$8(ChangeEventSourceCoordinator.java:369)\n")
    found = diagnose("users", status("RUNNING", ("FAILED", at_start)), "ecst_users")
    assert found.problem == TASK_FAILED
    assert found.message.endswith("at every start, Debezium resumes an incremental snapshot the "
                                  "connector's offsets hold, and Postgres rejects its query")
    assert found.next.startswith("a restart can fail the same way: "
                                 "`ecst connectors offsets drop-snapshot users`")
    assert "--failed-only" not in found.next


class Connect:
    def __init__(self, status, offsets):
        self._status, self._offsets = status, offsets

    def status(self, name):
        return self._status

    def offsets(self, name):
        return {"offsets": self._offsets}


def test_a_deployment_is_read_from_status_and_offsets():
    assert Deployment.read(Connect(None, []), "users") == Deployment(False)
    found = Deployment.read(Connect(status("STOPPED"), [{"partition": {}, "offset": {"lsn": 1}}]), "users")
    assert found.exists and found.has_offsets and found.status["connector"]["state"] == "STOPPED"


def test_postgres_error_of_the_latest_snapshot_of_the_table_is_found_in_connects_log(tmp_path: Path):
    log = tmp_path / "connect.log"
    log.write_text(
        "[t] INFO Requested 'INCREMENTAL' snapshot of data collections '[public.users]' with additional\n"
        "[t] ERROR Failed to read maximum key for table public.users (io.debezium…)\n"
        "org.postgresql.util.PSQLException: ERROR: syntax error at or near \")\"\n"
        "[t] INFO Requested 'INCREMENTAL' snapshot of data collections '[public.users]' with additional\n"
        "[t] ERROR Failed to read maximum key for table public.other (io.debezium…)\n"
        "org.postgresql.util.PSQLException: ERROR: from another connector\n"
        "[t] ERROR Failed to read maximum key for table public.users (io.debezium…)\n"
        "org.postgresql.util.PSQLException: ERROR: permission denied for table secret\n"
        "  Position: 62\n")
    assert postgres_error_in_log(log, ["public.users"]) == "ERROR: permission denied for table secret"
    assert postgres_error_in_log(log, ["public.absent"]) is None
    assert postgres_error_in_log(tmp_path / "missing.log", ["public.users"]) is None

"""A rebuild's bookkeeping: the stored JSON (compatible with what older ecst versions wrote, so a
rebuild they left in progress resumes), the resume rules, and the result's summary."""

import json
import time

import pytest

from ecst.consumer import rebuild as rebuild_mod
from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.rebuild import ReplayMode, ShadowRun
from ecst.consumer.rebuild_state import PartitionRange, RebuildResult, RebuildState, open_rebuild
from ecst.consumer.shadow import SHADOW
from ecst.consumer.store import StateStore
from ecst.exceptions import RebuildError
from tests.unit.consumer.envelopes import TOPIC, event, row

# Bookkeeping exactly as the ecst before RebuildState stored it (a `dict` named `record`).
OLD_INCREMENTAL = {"mode": "incremental", "condition": "country = 'DE'", "phase": "snapshotting",
                   "started_at": 1718000000.25, "rows_applied": 2400, "rate": 812.3,
                   "signal_id": "ecst-0123456789abcdef", "notify_from": {"0": 17, "1": 3},
                   "connector": "users", "tables": ["public.users"], "rows_expected": 0, "unit": "rows"}
OLD_REPLAY = {"mode": "replay", "condition": None, "phase": "snapshotting", "started_at": 1718000000.0,
              "rows_applied": 40, "rate": 10.0, "signal_id": "ecst-fedcba9876543210", "notify_from": {},
              "offsets": [[TOPIC, 0, 0, 100], [TOPIC, 1, 5, 50]], "rows_expected": 145, "unit": "offsets"}
OLD_COMPLETE = {**OLD_INCREMENTAL, "phase": "complete", "finished_at": 1718000100.5,
                "result": {"mode": "incremental", "tables": ["users"], "records": 2500, "snapshot_rows": 2400,
                           "rows_before": {}, "rows_after": {}, "removed": {}, "merged": 2400,
                           "seconds": 100.25, "resumed": False}}


@pytest.mark.parametrize("doc", [OLD_INCREMENTAL, OLD_REPLAY, OLD_COMPLETE],
                         ids=["incremental", "replay", "complete"])
def test_the_stored_json_of_an_older_ecst_round_trips_unchanged(doc):
    stored = json.loads(json.dumps(doc))  # as the store hands it back
    state = RebuildState.from_dict(stored)
    assert state.to_dict() == doc
    assert json.loads(json.dumps(state.to_dict())) == stored


def test_the_old_format_reads_as_typed_fields():
    inc = RebuildState.from_dict(OLD_INCREMENTAL)
    assert (inc.mode, inc.condition, inc.phase, inc.rows_applied, inc.rate) == (
        "incremental", "country = 'DE'", "snapshotting", 2400, 812.3)
    assert inc.notify_from == {0: 17, 1: 3} and inc.tables == ["public.users"] and inc.offsets is None
    assert inc.describe() == "incremental --where \"country = 'DE'\""
    rep = RebuildState.from_dict(OLD_REPLAY)
    assert rep.offsets == [PartitionRange(TOPIC, 0, 0, 100), PartitionRange(TOPIC, 1, 5, 50)]
    assert rep.connector is None and "connector" not in rep.to_dict()


def test_keys_this_ecst_does_not_know_are_kept():
    doc = {**OLD_REPLAY, "written_by": "a newer ecst"}
    assert RebuildState.from_dict(doc).to_dict() == doc


def test_a_rebuild_left_in_progress_by_an_older_ecst_resumes(url):
    shadow = StateStore(url, namespace=SHADOW)
    shadow.begin_rebuild({(TOPIC, 0): 7}, OLD_INCREMENTAL)
    state = open_rebuild(shadow, "incremental", "country = 'DE'", False)
    assert state is not None and state.signal_id == "ecst-0123456789abcdef" and state.rows_applied == 2400
    state.rows_applied = 2500
    shadow.save_rebuild_record(state.to_dict())
    assert shadow.rebuild_record() == {**OLD_INCREMENTAL, "rows_applied": 2500}
    shadow.close()


def test_an_old_replay_resumes_its_progress_where_it_was(url):
    shadow = StateStore(url, namespace=SHADOW)
    shadow.begin_rebuild({}, OLD_REPLAY)
    shadow.apply([], {(TOPIC, 0): 40})
    state = open_rebuild(shadow, "replay", None, False)
    config = ConsumerConfig(topics=(TopicMapping(TOPIC),), group_id="g")
    run = ShadowRun(shadow, config, "127.0.0.1:1", state, None)
    assert run.progress.done == 40 and run.progress.expected == 145 and not run.reached()
    shadow.close()


def test_a_replay_begun_before_the_bookkeeping_recorded_its_range_gets_one_on_resume(url, monkeypatch):
    shadow = StateStore(url, namespace=SHADOW)
    shadow.apply([event("r", 1, 100, after=row(1), snapshot="first")], {(TOPIC, 0): 1})  # no record
    state = open_rebuild(shadow, "replay", None, False)
    assert state is not None and state.offsets is None and state.phase == "snapshotting"
    monkeypatch.setattr(rebuild_mod.kafka, "topic_offsets",
                        lambda bootstrap, topics: ({(TOPIC, 0): 0}, {(TOPIC, 0): 12}))
    ReplayMode("127.0.0.1:1", [TOPIC]).resume(state)
    assert state.offsets == [PartitionRange(TOPIC, 0, 0, 12)] and state.rows_expected == 12
    assert state.to_dict()["offsets"] == [[TOPIC, 0, 0, 12]] and state.unit == "offsets"
    with pytest.raises(RebuildError, match="without bookkeeping"):
        open_rebuild(shadow, "incremental", None, False)
    shadow.close()


def test_the_summary_names_reconciled_deletes_or_the_merge():
    full = RebuildResult(["users"], 120, {"users": 90}, {"users": 100}, 3.2, False, "incremental", 100,
                         {"users": 4})
    assert full.summary() == ("incremental rebuild finished in 3.2 s: 120 records read, 100 snapshot rows; "
                              "users: 100 rows (was 90; 4 deleted rows reconciled)")
    merged = RebuildResult(["users"], 10, {}, {}, 1.0, True, "incremental", 10, merged=10)
    assert merged.summary().endswith("resumed and finished in 1.0 s: 10 records read, 10 snapshot rows; "
                                     "filtered backfill merged 10 rows into the live state")


def test_a_rebuild_resumes_only_in_its_own_mode_and_restart_discards_it(url):
    shadow = StateStore(url, namespace=SHADOW)
    shadow.begin_rebuild({(TOPIC, 0): 7}, {"mode": "incremental", "condition": None, "phase": "snapshotting",
                                           "started_at": time.time(), "rows_applied": 3, "rows_expected": 9})
    shadow.apply([event("r", 1, 100, after=row(1), snapshot="incremental")], {(TOPIC, 0): 8})
    assert open_rebuild(shadow, "incremental", None, False).rows_applied == 3
    with pytest.raises(RebuildError, match="incremental rebuild is in progress.*--restart"):
        open_rebuild(shadow, "blocking", None, False)
    with pytest.raises(RebuildError, match="in progress"):
        open_rebuild(shadow, "incremental", "id < 5", False)
    assert open_rebuild(shadow, "blocking", None, True) is None  # --restart
    assert shadow.tables() == [] and shadow.stored_offsets() == {} and shadow.rebuild_record() is None
    shadow.close()


def test_a_new_rebuild_stores_the_keys_older_ecst_versions_read(url, monkeypatch):
    from ecst.connectors import notifications
    from ecst.connectors.snapshot_source import SnapshotSource
    from ecst.consumer.rebuild import IncrementalMode
    from tests.unit.connectors.fakes import FakeConnect

    ends = lambda bootstrap, topics: ({(t, 0): 0 for t in topics}, {(t, 0): 5 for t in topics})  # noqa: E731
    monkeypatch.setattr(rebuild_mod.kafka, "topic_offsets", ends)
    monkeypatch.setattr(notifications.kafka, "topic_offsets", ends)
    client = FakeConnect({"topic.prefix": "producer", "signal.enabled.channels": "kafka",
                          "signal.kafka.topic": "producer.signals", "notification.enabled.channels": "sink",
                          "notification.sink.topic.name": "producer.notifications"})
    shadow = StateStore(url, namespace=SHADOW)
    IncrementalMode.prepare(SnapshotSource(client, "users"), "127.0.0.1:1", [TOPIC]).begin(shadow, "id < 5")
    doc = shadow.rebuild_record()
    assert set(doc) == set(OLD_INCREMENTAL) and shadow.stored_offsets() == {(TOPIC, 0): 5}
    assert (doc["notify_from"], doc["tables"], doc["phase"], doc["rows_expected"]) == (
        {"0": 5}, ["public.users"], "starting", 0)
    shadow.discard()
    ReplayMode("127.0.0.1:1", [TOPIC]).begin(shadow, None)
    doc = shadow.rebuild_record()
    assert set(doc) == set(OLD_REPLAY) and doc["offsets"] == [[TOPIC, 0, 0, 5]]
    assert shadow.stored_offsets() == {}  # a replay starts at the beginning
    shadow.close()

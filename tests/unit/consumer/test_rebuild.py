"""Rebuilds on a real SQLite file: snapshot rows counted, replay progress, shadow start, filtered
merge through the guards, the status report, and what is refused before anything is recorded.
(The modes themselves run on the real stack, in tests/integration/test_rebootstrap*.py.)"""

import time

import pytest

from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.rebuild import ShadowRun, SnapshotRows
from ecst.consumer.rebuild_state import RebuildState
from ecst.consumer.shadow import SHADOW
from ecst.consumer.status import render_text, state_status
from ecst.consumer.store import StateStore
from ecst.exceptions import StateStoreError
from tests.unit.consumer.envelopes import TOPIC, event, row


def test_snapshot_rows_are_counted_as_read_not_as_applied(url):
    rows = SnapshotRows(only_incremental=False)
    events = [event("r", 1, 100, 0, after=row(1), snapshot="first"),
              event("u", 1, 200, 1, after=row(1)),  # the same key, streamed, in the same batch
              event("r", 2, 100, 2, after=row(2), snapshot="last")]
    assert all(rows(e) for e in events)
    assert rows.count == 2
    stats = StateStore(url).apply(events, {(TOPIC, 0): 3})
    assert stats.by_op["r"] == 1  # the batch wrote key 1 once, as its update
    assert all(rows(e) for e in events) and rows.count == 2  # a batch read again counts once
    backfill = SnapshotRows(only_incremental=True)
    assert not backfill(events[0]) and backfill.count == 0
    assert backfill(event("r", 3, 100, 3, after=row(3), snapshot="incremental")) and backfill.count == 1


def test_replay_progress_counts_the_offsets_of_its_range_and_reaches_its_end(url):
    shadow = StateStore(url, namespace=SHADOW)
    record = {"mode": "replay", "condition": None, "phase": "snapshotting", "started_at": time.time(),
              "rows_applied": 0, "rows_expected": 145, "offsets": [[TOPIC, 0, 0, 100], [TOPIC, 1, 5, 50]]}
    shadow.begin_rebuild({}, record)
    config = ConsumerConfig(topics=(TopicMapping(TOPIC),), group_id="g")
    reports = []
    run = ShadowRun(shadow, config, "127.0.0.1:1", RebuildState.from_dict(record),
                    lambda p: reports.append((p.done, p.line())))
    assert (run.progress.done, run.reached()) == (0, False)
    shadow.apply([], {(TOPIC, 0): 40})  # partition 1 not read yet: still at its beginning
    run.on_batch(None)
    assert reports[-1][0] == 40 and not run.reached()
    shadow.apply([], {(TOPIC, 0): 100, (TOPIC, 1): 49})  # the last offset of 1 is a gap
    run.on_batch(None)
    assert reports[-1][0] == 144 and not run.reached()
    shadow.apply([], {(TOPIC, 1): 60})  # read beyond the range (a later batch): capped
    run.on_batch(None)
    assert reports[-1][0] == 145 and run.reached()
    run.finish()
    assert reports[-1][1].startswith(f"[{'#' * 30}] 145/145 offsets (100%)")
    assert shadow.rebuild_record()["rows_applied"] == 145
    shadow.close()


def test_the_shadow_consumer_reads_alone_in_its_own_group_without_a_static_id(url):
    shadow = StateStore(url, namespace=SHADOW)
    record = {"mode": "replay", "condition": None, "phase": "snapshotting", "started_at": time.time(),
              "rows_applied": 0, "rows_expected": 0, "offsets": []}
    config = ConsumerConfig(topics=(TopicMapping(TOPIC),), group_id="g", group_instance_id="users-0")
    run = ShadowRun(shadow, config, "127.0.0.1:1", RebuildState.from_dict(record), None)
    assert run.policy.reads_alone  # assigned every partition: no group join, no rebalance
    assert run.consumer.config.group_id == "g-rebuild" and run.consumer.config.group_instance_id == ""
    shadow.close()


def test_discard_and_begin_refuse_the_live_state(url):
    live = StateStore(url)
    with pytest.raises(StateStoreError, match="never the live state"):
        live.discard()
    with pytest.raises(StateStoreError, match="shadow namespace"):
        live.begin_rebuild({}, {})
    live.close()


def test_a_filtered_merge_never_overwrites_newer_rows_nor_resurrects_deletes(url):
    live, shadow = StateStore(url), StateStore(url, namespace=SHADOW)
    live.apply([event("r", k, 100, k, after=row(k, balance="1.00")) for k in (1, 2, 3, 4)], {(TOPIC, 0): 4})
    live.apply([event("u", 2, 300, 4, after=row(2, balance="2.00")),  # newer than the backfill
                event("d", 3, 300, 5, before={"id": 3})], {(TOPIC, 0): 6})  # deleted after it
    shadow.apply([event("r", k, 200, k, after=row(k, balance="9.00"), snapshot="incremental")
                  for k in (1, 2, 3, 5)], {})
    assert live.merge_from(shadow) == 4
    rows = {r["id"]: str(r["balance"]) for r in live.rows("users")}
    assert rows == {1: "9.00", 2: "2.00", 4: "1.00", 5: "9.00"}  # 4 untouched: not in the backfill
    live.close()
    shadow.close()


def test_status_reports_tables_offsets_and_a_rebuild_in_progress(url):
    live = StateStore(url)
    live.apply([event("r", 1, 100, 0, after=row(1), snapshot="last")], {(TOPIC, 0): 1})
    shadow = StateStore(url, namespace=SHADOW)
    shadow.begin_rebuild({(TOPIC, 0): 1}, {"mode": "blocking", "condition": None, "phase": "snapshotting",
                                           "started_at": time.time() - 20, "rows_applied": 400,
                                           "rows_expected": 1000, "rate": 20.0})
    assert live.rebuild_in_progress()["rows_applied"] == 400
    report = state_status(url)
    assert report["tables"] == {"users": 1} and report["offsets"] == {TOPIC: {0: 1}}
    assert report["rebuild_in_progress"]["eta_s"] == 30.0
    text = render_text(report)
    assert "table       users: 1 rows" in text
    assert "rebuild     blocking snapshotting: 400/1,000 (40%), 20/s, running 20 s, ETA 30 s" in text
    shadow.save_rebuild_record({**shadow.rebuild_record(), "mode": "replay", "unit": "offsets"})
    assert "rebuild     replay snapshotting: 400/1,000 offsets (40%), 20/s" in render_text(state_status(url))
    live.close()
    shadow.close()


def test_status_of_a_database_without_ecst_state_says_so(tmp_path):
    with pytest.raises(StateStoreError, match="holds no ecst state"):
        state_status(f"sqlite:///{tmp_path / 'empty.db'}")


class FakeConnect:
    """Just enough of ConnectClient for the checks that run before anything is sent."""

    url = "http://connect.invalid"

    def __init__(self, config):
        self.config = config

    def get_config(self, name):
        return self.config


def test_a_connector_without_notifications_is_refused_before_anything_is_recorded(url):
    from ecst.consumer.config import ConsumerConfig, TopicMapping
    from ecst.consumer.rebuild import SnapshotSource, rebuild
    from ecst.exceptions import ConfigError, ProducerError

    client = FakeConnect({"topic.prefix": "producer", "signal.data.collection": "public.ecst_signal"})
    config = ConsumerConfig(topics=(TopicMapping(TOPIC),), group_id="g")
    with pytest.raises(ConfigError, match="notification.sink.topic.name"):
        rebuild("incremental", url, config, "127.0.0.1:1", source=SnapshotSource(client, "users"))
    with pytest.raises(ProducerError, match="needs the producer database"):
        rebuild("blocking", url, config, "127.0.0.1:1", source=SnapshotSource(client, "users", "source"))
    with pytest.raises(ConfigError, match="incremental mode only"):
        rebuild("blocking", url, config, "127.0.0.1:1", source=SnapshotSource(client, "users"),
                condition="id < 3")
    assert StateStore(url, namespace=SHADOW).rebuild_record() is None


class FailedConnect(FakeConnect):
    """A connector RUNNING whose only task FAILED (Connect reports it so)."""

    def status(self, name):
        return {"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "FAILED", "trace":
                "io.debezium.DebeziumException: … but this is no longer available on the server.\n\tat x"}]}


def test_a_failed_task_refuses_a_snapshot_rebuild_at_once_and_leaves_nothing_that_blocks_fresh(url):
    from ecst.consumer.rebuild import SnapshotSource, rebuild
    from ecst.exceptions import SnapshotFailedError

    client = FailedConnect({"topic.prefix": "producer", "signal.kafka.topic": "producer.signals",
                            "signal.enabled.channels": "kafka", "notification.enabled.channels": "sink",
                            "notification.sink.topic.name": "producer.notifications"})
    config = ConsumerConfig(topics=(TopicMapping(TOPIC),), group_id="g")
    with pytest.raises(SnapshotFailedError, match="task 0 is FAILED.*ecst rebootstrap fresh") as exc:
        rebuild("incremental", url, config, "127.0.0.1:1", source=SnapshotSource(client, "users"))
    assert "so nothing was sent" in str(exc.value)
    shadow = StateStore(url, namespace=SHADOW)
    assert shadow.rebuild_record() is None
    # an unfinished rebuild (say, killed) waiting on that connector is discarded, not resumed
    shadow.begin_rebuild({(TOPIC, 0): 7}, {"mode": "blocking", "condition": None, "phase": "snapshotting",
                                           "started_at": time.time(), "rows_applied": 3, "rows_expected": 9})
    with pytest.raises(SnapshotFailedError, match="the unfinished rebuild was discarded"):
        rebuild("blocking", url, config, "127.0.0.1:1", source=SnapshotSource(client, "users"))
    assert shadow.rebuild_record() is None and shadow.stored_offsets() == {}
    shadow.close()


def test_a_where_that_is_not_one_condition_is_refused_before_anything_is_recorded(url):
    from ecst.consumer.rebuild import SnapshotSource, rebuild
    from ecst.exceptions import ConfigError

    config = ConsumerConfig(topics=(TopicMapping(TOPIC),), group_id="g")
    source = SnapshotSource(FakeConnect({"topic.prefix": "producer"}), "users")
    with pytest.raises(ConfigError, match="must be one SQL condition"):
        rebuild("incremental", url, config, "127.0.0.1:1", source=source, condition="1=1; DROP TABLE users")
    assert StateStore(url, namespace=SHADOW).rebuild_record() is None

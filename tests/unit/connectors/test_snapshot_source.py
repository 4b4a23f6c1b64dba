"""The connector behind a snapshot rebuild: can it snapshot now, and which channel a signal takes."""

import pytest

from ecst.connectors import signals
from ecst.connectors.snapshot_source import SnapshotSource
from ecst.exceptions import ConfigError, RebuildError
from tests.unit.connectors.fakes import FakeConn, FakeConnect

CONFIG = {"topic.prefix": "producer", "signal.data.collection": "public.ecst_signal",
          "signal.enabled.channels": "source,kafka", "signal.kafka.topic": "producer.signals"}
SIGNAL = signals.SnapshotSignal("ecst-1", ("public.users",), "blocking")


def test_a_missing_connector_is_named_with_the_command_to_list_them():
    with pytest.raises(RebuildError, match="connector 'users' does not exist on http://connect.invalid"):
        SnapshotSource(FakeConnect(None), "users").config()
    assert "does not exist" in SnapshotSource(FakeConnect(None), "users").problem()


def test_a_running_connector_has_no_problem_and_a_stopped_one_says_how_to_resume():
    assert SnapshotSource(FakeConnect(CONFIG), "users").problem() is None
    stopped = SnapshotSource(FakeConnect(CONFIG, state="STOPPED"), "users").problem()
    assert stopped.startswith("it is STOPPED: `ecst connectors resume users`")
    waiting = SnapshotSource(FakeConnect(CONFIG, tasks=("UNASSIGNED",)), "users").problem()
    assert waiting == "it is RUNNING and task 0 is UNASSIGNED, not RUNNING (`ecst connectors status users`)"


def test_a_signal_through_the_table_is_one_insert():
    conn = FakeConn()
    source = SnapshotSource(FakeConnect(CONFIG), "users", "source", conn.opener())
    assert source.send(SIGNAL, source.channels(), "127.0.0.1:1") == "source"
    (query, params), = conn.executed
    assert params[:2] == ("ecst-1", "execute-snapshot")


def test_a_signal_through_kafka_goes_to_the_signal_topic_keyed_by_the_prefix(monkeypatch):
    sent = []
    monkeypatch.setattr(signals, "send_via_kafka", lambda *args: sent.append(args))
    source = SnapshotSource(FakeConnect(CONFIG), "users")  # auto: Kafka when the connector listens there
    assert source.send(SIGNAL, source.channels(), "broker:9092") == "kafka"
    assert sent == [("broker:9092", "producer.signals", "producer", SIGNAL)]
    with pytest.raises(ConfigError, match="no Kafka signal channel"):
        SnapshotSource(FakeConnect({"topic.prefix": "producer"}), "users", "kafka").send(
            SIGNAL, signals.Channels.of("users", {"topic.prefix": "producer"}), "broker:9092")

"""The connector behind a snapshot rebuild: can it snapshot now, and which channel a signal takes."""

import pytest
from psycopg import errors

from ecst.connectors import signals
from ecst.connectors.snapshot_source import SnapshotSource
from ecst.exceptions import ConfigError, ProducerError, RebuildError, SignalTableError
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
    source = SnapshotSource(FakeConnect(CONFIG), "users")  # auto, no producer database: Kafka
    assert source.send(SIGNAL, source.channels(), "broker:9092") == "kafka"
    assert sent == [("broker:9092", "producer.signals", "producer", SIGNAL)]
    with pytest.raises(ConfigError, match="no Kafka signal channel"):
        SnapshotSource(FakeConnect({"topic.prefix": "producer"}), "users", "kafka").send(
            SIGNAL, signals.Channels.of("users", {"topic.prefix": "producer"}), "broker:9092")


class Refusing(FakeConn):
    """A producer database that refuses the INSERT into the signal table."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def execute(self, query, params=None):
        raise self.error


def unreachable():
    raise ProducerError("cannot reach the producer database db:5432 (timeout): check that it runs")


def test_auto_signals_through_the_table_when_the_producer_database_is_known(monkeypatch):
    sent = []
    monkeypatch.setattr(signals, "send_via_kafka", lambda *args: sent.append(args))
    conn = FakeConn()
    source = SnapshotSource(FakeConnect(CONFIG), "users", "auto", conn.opener())
    assert source.channel_for(source.channels()) == "source"
    assert source.send(SIGNAL, source.channels(), "broker:9092") == "source"
    assert len(conn.executed) == 1 and sent == []


@pytest.mark.parametrize("error", [errors.InsufficientPrivilege("permission denied for table ecst_signal"),
                                   errors.UndefinedTable('relation "public.ecst_signal" does not exist')])
def test_auto_falls_back_to_kafka_when_the_table_refuses_the_signal(monkeypatch, caplog, error):
    sent = []
    monkeypatch.setattr(signals, "send_via_kafka", lambda *args: sent.append(args))
    source = SnapshotSource(FakeConnect(CONFIG), "users", "auto", Refusing(error).opener())
    assert source.send(SIGNAL, source.channels(), "broker:9092") == "kafka"
    assert sent == [("broker:9092", "producer.signals", "producer", SIGNAL)]
    assert f"cannot insert the signal into public.ecst_signal ({error})" in caplog.text
    assert "signalling through the Kafka channel producer.signals instead" in caplog.text
    # chosen explicitly, the table's refusal is the error, naming what to grant or use
    explicit = SnapshotSource(FakeConnect(CONFIG), "users", "source", Refusing(error).opener())
    with pytest.raises(SignalTableError, match="grant INSERT on it .* or use --channel kafka"):
        explicit.send(SIGNAL, explicit.channels(), "broker:9092")
    assert len(sent) == 1


def test_auto_falls_back_to_kafka_when_the_producer_database_cannot_be_reached(monkeypatch):
    sent = []
    monkeypatch.setattr(signals, "send_via_kafka", lambda *args: sent.append(args))
    source = SnapshotSource(FakeConnect(CONFIG), "users", "auto", unreachable)
    assert source.send(SIGNAL, source.channels(), "broker:9092") == "kafka" and len(sent) == 1
    table_only = {**CONFIG, "signal.enabled.channels": "source"}
    nowhere = SnapshotSource(FakeConnect(table_only), "users", "auto", unreachable)
    with pytest.raises(SignalTableError, match="cannot reach the producer database db:5432"):
        nowhere.send(SIGNAL, nowhere.channels(), "broker:9092")


def test_an_insert_that_may_have_been_written_is_never_sent_again(monkeypatch):
    sent = []
    monkeypatch.setattr(signals, "send_via_kafka", lambda *args: sent.append(args))
    lost = Refusing(errors.OperationalError("server closed the connection unexpectedly"))
    source = SnapshotSource(FakeConnect(CONFIG), "users", "auto", lost.opener())
    with pytest.raises(ProducerError, match="inserting the signal into public.ecst_signal failed "
                                            r"\(server closed the connection unexpectedly\)") as raised:
        source.send(SIGNAL, source.channels(), "broker:9092")
    assert not isinstance(raised.value, SignalTableError) and sent == []

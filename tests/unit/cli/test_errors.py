"""Errors met at the CLI's edge become ecst's own, one line each saying what to do."""

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, UnknownTopicOrPartitionError

from ecst.cli.errors import ensure_state_folder, kafka_errors, one_shot_state
from ecst.exceptions import KafkaUnavailableError, StackError, StateStoreError, StateStoreUnavailableError


@pytest.mark.parametrize("error", [KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']"),
                                   KafkaConnectionError("connection refused")])
def test_kafka_not_answering_is_kafka_unavailable(error):
    with pytest.raises(KafkaUnavailableError) as err, kafka_errors("127.0.0.1:1", "; then again"):
        raise error
    assert isinstance(err.value, StackError) and err.value.__cause__ is error
    assert str(err.value).startswith("couldn't connect to Kafka at 127.0.0.1:1: ")
    assert str(err.value).endswith("is it running? (`ecst stack status`, or pass --bootstrap-servers); "
                                   "then again")


def test_other_kafka_errors_are_left_alone():
    with pytest.raises(UnknownTopicOrPartitionError), kafka_errors("127.0.0.1:1"):
        raise UnknownTopicOrPartitionError()


def test_a_one_shot_command_says_what_to_do_about_an_unreachable_state():
    expected = r"^state store unavailable: refused \(sqlite:///s.db\): do this$"
    with pytest.raises(StateStoreUnavailableError, match=expected), one_shot_state("do this"):
        raise StateStoreUnavailableError("state store unavailable: refused (sqlite:///s.db)")
    with pytest.raises(StateStoreError, match="^broken$"), one_shot_state():  # only an outage gets the hint
        raise StateStoreError("broken")


def test_a_state_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("")
    ensure_state_folder(f"sqlite:///{tmp_path / 'ok' / 's.db'}")
    assert (tmp_path / "ok").is_dir()
    with pytest.raises(StateStoreError, match=f"cannot create the folder {tmp_path / 'file'}"):
        ensure_state_folder(f"sqlite:///{tmp_path / 'file' / 'sub' / 's.db'}")

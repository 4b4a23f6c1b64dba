"""The consumer's readiness and its checks, without Kafka (the loop itself runs on the real
stack: tests/integration/test_consumer_service.py)."""

import pytest

from ecst.consumer.config import ConsumerConfig
from ecst.consumer.runner import Consumer
from ecst.consumer.store import StateStore
from ecst.exceptions import ConfigError, StateStoreUnavailableError


@pytest.fixture
def store(tmp_path):
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def test_not_ready_while_the_state_store_is_unavailable_whatever_the_policy(store):
    consumer = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1",
                        config=ConsumerConfig(readiness="always"))
    assert consumer.ready() and consumer.not_ready_reason() is None
    consumer.health.lost(StateStoreUnavailableError("state store unavailable: connection refused"))
    assert not consumer.ready() and consumer.not_ready_reason() == "state store unavailable"
    assert consumer.metrics.value("ecst_state_store_up") == 0
    assert consumer.healthy()  # alive: a restart would not bring the store back
    consumer.health.back()
    assert consumer.ready() and consumer.metrics.value("ecst_state_store_up") == 1


def test_readiness_says_what_it_waits_for(store):
    snapshot = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1")
    assert snapshot.not_ready_reason() == "snapshot not applied"
    caught_up = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1",
                         config=ConsumerConfig(readiness="caught-up"))
    assert caught_up.not_ready_reason() == "end offsets of start-up not reached yet"


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 0}, "^batch_size: 0 is not a batch size"),
    ({"batch_size": 10**14}, "^batch_size: 100000000000000 is not a batch size"),
    ({"group_instance_id": "a/b"}, "^kafka.group_instance_id: 'a/b' is not a group instance id"),
])
def test_a_consumer_built_in_python_checks_its_config(store, changes, message):
    with pytest.raises(ConfigError, match=message):
        Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1", config=ConsumerConfig(**changes))

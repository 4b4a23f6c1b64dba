"""The group reader's watch over kafka-python's group join (ecst.consumer.group): a join that never
finishes gets a new client. kafka-python's consumer is faked; the join itself runs on the real stack
(tests/integration)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ecst.consumer import group
from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.group import GroupReader, joined
from ecst.consumer.metrics import Metrics
from ecst.consumer.outage import StoreHealth

pytestmark = pytest.mark.unit


class Coordinator:
    def __init__(self) -> None:
        self.state_stable = False
        self.rejoin = True

    def stable(self) -> bool:
        return self.state_stable

    def need_rejoin(self) -> bool:
        return self.rejoin


class Client:
    """A kafka-python consumer, as far as the reader's join watch uses it."""

    def __init__(self, options: dict) -> None:
        self.options = options
        self._coordinator = Coordinator()
        self.subscribed: list = []
        self.closed = False

    def subscribe(self, topics, listener) -> None:
        self.subscribed.append((list(topics), listener))

    def poll(self, timeout_ms=0, max_records=None) -> dict:
        return {}

    def close(self, autocommit=True) -> None:
        self.closed = True

    def join(self) -> None:
        self._coordinator.state_stable, self._coordinator.rejoin = True, False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clients(monkeypatch) -> list[Client]:
    made: list[Client] = []

    def make(settings, **options) -> Client:
        made.append(Client(options))
        return made[-1]

    monkeypatch.setattr("ecst.kafka.consumer", make)
    return made


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(group.time, "monotonic", fake)
    return fake


def reader(join_stuck_s: float = 120.0) -> GroupReader:
    config = ConsumerConfig(topics=(TopicMapping(topic="p.public.users", table="users"),),
                            group_id="g", group_instance_id="g-0")
    return GroupReader("127.0.0.1:1", config, store=None, health=StoreHealth(Metrics()),  # type: ignore[arg-type]
                       client_id="c", poll_timeout_ms=10, alive=lambda: None, join_stuck_s=join_stuck_s)


def test_joined_asks_the_coordinator_and_is_true_for_a_client_it_cannot_ask():
    client = Client({})
    assert not joined(client)  # type: ignore[arg-type]
    client._coordinator.state_stable = True
    assert not joined(client)  # type: ignore[arg-type]  # stable, but a rejoin is pending
    client.join()
    assert joined(client)  # type: ignore[arg-type]
    assert joined(SimpleNamespace())  # type: ignore[arg-type]


def test_a_join_unfinished_for_join_stuck_s_gets_a_new_client_with_the_same_options_and_listener(
        clients, clock):
    r = reader()
    r.subscribe()
    first = clients[0]
    r.poll()  # the join begins
    clock.now += 119
    r.poll()
    assert len(clients) == 1 and r.replaced == 0
    clock.now += 2
    r.poll()
    assert r.replaced == 1 and first.closed
    second = clients[1]
    assert r.consumer is second and r.listener.consumer is second
    assert second.options == first.options and second.options["group_instance_id"] == "g-0"
    assert second.subscribed == [(["p.public.users"], r.listener)]
    # the new client's own join is timed from its first poll
    r.poll()
    clock.now += 119
    r.poll()
    assert r.replaced == 1


def test_a_join_that_finishes_resets_the_watch(clients, clock):
    r = reader()
    r.subscribe()
    r.poll()
    clock.now += 100
    clients[0].join()
    r.poll()
    clients[0]._coordinator.rejoin = True  # a later rebalance: timed afresh
    clock.now += 30
    r.poll()
    clock.now += 100
    r.poll()
    assert r.replaced == 0 and len(clients) == 1
    clock.now += 21
    r.poll()
    assert r.replaced == 1


def test_nothing_is_watched_before_the_subscription(clients, clock):
    r = reader(join_stuck_s=1.0)
    r.poll()
    clock.now += 10
    r.poll()
    assert r.replaced == 0 and len(clients) == 1


class JoiningCoordinator:
    """kafka-python 3.0.12's coordinator, as far as `finish_join` asks it."""

    def __init__(self, rebalancing: bool, rejoin_needed: bool = False) -> None:
        self.rebalancing, self.rejoin_needed = rebalancing, rejoin_needed
        self.awaited: list[tuple[bool, int]] = []  # (rejoin marked when awaited, timeout)

    def rebalance_in_progress(self) -> bool:
        return self.rebalancing

    def request_rejoin(self) -> None:
        self.rejoin_needed = True

    def ensure_active_group(self, timeout_ms=None) -> bool:
        self.awaited.append((self.rejoin_needed, timeout_ms))
        self.rebalancing = self.rejoin_needed = False  # the join's outcome taken
        return True


@pytest.mark.parametrize(("rebalancing", "marked", "awaited"), [
    (True, False, [(True, 5000)]),  # a join kafka-python stopped awaiting: marked, then awaited
    (True, True, [(True, 5000)]),  # a join still marked: awaited as it is
    (False, False, []),  # a stable member: nothing to do
])
def test_a_join_under_way_after_a_poll_is_marked_needed_and_awaited(rebalancing, marked, awaited):
    coordinator = JoiningCoordinator(rebalancing, marked)
    client = SimpleNamespace(_coordinator=coordinator)
    assert group.finish_join(client, 5000) is bool(awaited)  # type: ignore[arg-type]
    assert coordinator.awaited == awaited
    assert group.finish_join(SimpleNamespace(), 5000) is False  # type: ignore[arg-type]  # a client it cannot ask


def test_every_poll_of_a_subscribed_reader_finishes_a_join_under_way(clients, clock):
    r = reader()
    clients[0]._coordinator = JoiningCoordinator(rebalancing=True)
    r.poll()
    assert clients[0]._coordinator.awaited == []  # not subscribed yet: not its join
    r.subscribe()
    r.poll()
    assert clients[0]._coordinator.awaited == [(True, group.JOIN_WAIT_MS)]


def test_a_batch_whose_codec_cannot_be_decompressed_is_one_line_naming_the_package(clients, clock):
    from kafka.errors import UnsupportedCodecError

    from ecst.exceptions import KafkaCodecError

    r = reader()
    r.subscribe()

    def poll(timeout_ms=0, max_records=None):
        raise UnsupportedCodecError("Libraries for zstd compression codec not found")

    clients[0].poll = poll  # type: ignore[method-assign]
    said = r"cannot decompress here \(.*zstd.*\): install `zstandard` beside ecst"
    with pytest.raises(KafkaCodecError, match=said):
        r.poll()

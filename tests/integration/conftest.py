"""One real stack for the whole session (Postgres, Kafka, Connect + Debezium); each test gets
its own table, publication, slot, connector and topics, so tests never see each other's data.

The stack backend is chosen by ECST_TEST_STACK: `local` (default, what CI runs: `ecst stack up`
with no Docker) or `testcontainers` (where a Docker engine exists). A stack that cannot start
makes the tests fail: they never skip.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import yaml

from ecst import source, verify
from ecst.connectors import apply as apply_mod
from ecst.connectors.client import ConnectClient
from ecst.connectors.definition import parse_definition
from ecst.connectors.slots import wait_for_slot_inactive
from ecst.consumer.config import ConsumerConfig, TopicMapping
from ecst.consumer.runner import Consumer
from ecst.consumer.store import StateStore
from ecst.demo import delete_topics, topic_for
from tests.integration.stacks import start_stack, tolerate_kafka_connect_leak

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(request):
    backend = os.environ.get("ECST_TEST_STACK", "local")
    running = start_stack(backend)
    tolerate_kafka_connect_leak(request.config, running.kafka_ports)
    yield running
    running.stop()


class Capture:
    """A producer table captured by its own connector, and helpers to consume and compare it."""

    def __init__(self, stack, uid: str, table: str | None = None) -> None:
        self.stack = stack
        self.uid = uid
        self.table = table or f"users_{uid}"
        doc = yaml.safe_load((ROOT / "connectors" / "users.yaml").read_text())
        doc["name"] = f"users-{uid}"
        self.signal_table = f"signal_{uid}"
        doc["config"].update({
            "table.include.list": f"public.{self.table}",
            "slot.name": f"ecst_{uid}",
            "publication.name": f"ecst_{uid}",
            "topic.prefix": f"t{uid}",
            "signal.data.collection": f"public.{self.signal_table}",
            "signal.kafka.topic": f"t{uid}.signals",
            "notification.sink.topic.name": f"t{uid}.notifications",
            "signal.kafka.bootstrap.servers": stack.bootstrap,  # the worker's env names the local stack's
        })
        self.doc = doc
        self.definition = parse_definition(doc, environ={})
        self.topic = topic_for(self.definition)
        self.client = ConnectClient(stack.connect_url)
        self.conn = stack.producer_conn()

    def create(self, rows: int) -> None:
        source.create_users_table(self.conn, self.table, rows)
        self.prepare()

    def prepare(self) -> None:
        source.prepare_capture(self.conn, self.table, self.definition.config["publication.name"],
                               signal_table=self.signal_table)

    def apply(self) -> str:
        return apply_mod.apply(self.client, self.definition).action

    def consumer(self, store: StateStore, group: str | None = None, batch_size: int = 1000,
                 bootstrap=None, **config) -> Consumer:
        """A consumer of this capture's topic; `bootstrap` (a KafkaSettings or host:port):
        another way to the broker than the stack's PLAINTEXT listener."""
        config.setdefault("topics", (TopicMapping(self.topic),))
        return Consumer(store, bootstrap_servers=bootstrap or self.stack.bootstrap,
                        group_id=group or f"g-{self.uid}", batch_size=batch_size,
                        config=ConsumerConfig().with_(**config))

    def compare(self, store: StateStore, key: list[str] | None = None) -> verify.Comparison:
        """Every column of every row, by the producer's primary key (or `key`, for a table keyed
        by message.key.columns)."""
        return verify.compare_rows(verify.source_rows(self.conn, self.table), store.rows(self.table),
                                   key or verify.primary_key(self.conn, self.table))

    def converge(self, store: StateStore, timeout_s: float = 90, key: list[str] | None = None,
                 **consumer_options) -> verify.Comparison:
        """Consume until the state equals the producer table, or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.consumer(store, **consumer_options).run(until_caught_up=True)
            result = self.compare(store, key)
            if result.matches or time.monotonic() > deadline:
                return result
            time.sleep(1)

    def close(self) -> None:
        cfg = self.definition.config
        self.client.delete(self.definition.name)
        wait_for_slot_inactive(self.conn, cfg["slot.name"])
        source.drop_capture(self.conn, cfg["slot.name"], cfg["publication.name"])
        self.conn.execute(f'DROP TABLE IF EXISTS "{self.table}", "{self.signal_table}" CASCADE')
        delete_topics(self.stack.bootstrap, [self.topic, cfg["signal.kafka.topic"],
                                             cfg["notification.sink.topic.name"]])
        self.conn.close()


@pytest.fixture
def capture(stack):
    c = Capture(stack, uuid.uuid4().hex[:10])
    yield c
    c.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_store(request, tmp_path, stack):
    """A private state store of each supported kind: a SQLite file, or a Postgres database."""
    if request.param == "sqlite":
        store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        yield store
        store.close()
    else:
        url, drop = stack.new_database(f"state_{uuid.uuid4().hex[:10]}")
        store = StateStore(url)
        yield store
        store.close()
        drop()

"""Stack backends for the integration tests: the local stack (default, what CI runs) or
testcontainers (where a Docker engine exists). Both expose the same small interface."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import psycopg
import pytest

from ecst.settings import Settings
from ecst.stack import LocalStack


class LocalBackend:
    """`ecst stack up --secure` in the checkout's .ecst/ (or ECST_HOME); stopped at the end only if
    this session started it, so a stack left up by `make demo` is reused and kept. The secure
    profile (a SASL_SSL listener beside PLAINTEXT, for test_kafka_security.py) is turned on here,
    before any test runs: a reused broker without it is restarted once, at the session's start."""

    def __init__(self) -> None:
        self.stack = LocalStack(Settings.from_env())
        self.started_here = not self.stack.is_up()
        self.stack.up(secure=True)
        self.connect_url = self.stack.connect.url
        self.bootstrap = self.stack.kafka.bootstrap
        self.settings = self.stack.settings
        self.kafka_ports = (self.settings.kafka_port, self.settings.kafka_secure_port)

    def producer_conn(self) -> psycopg.Connection:
        return self.stack.postgres.connect()

    def new_database(self, name: str) -> tuple[str, Callable[[], None]]:
        with self.stack.postgres.connect("postgres") as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        pw = self.stack.postgres.admin_password
        url = f"postgresql://ecst:{pw}@127.0.0.1:{self.settings.pg_port}/{name}"

        def drop() -> None:
            with self.stack.postgres.connect("postgres") as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        return url, drop

    def stop(self) -> None:
        if self.started_here:
            self.stack.down()


def tolerate_kafka_connect_leak(config: pytest.Config, ports: Iterable[int]) -> None:
    """Tolerate one known kafka-python 3.0.12 leak, and only for sockets connected to these Kafka
    ports, from now until the session ends.

    When a client closes while a connection to a broker is still being made, kafka-python cancels
    the connecting task by closing its coroutine; `KafkaNetSocket.connect` (kafka/net/inet.py)
    holds the new socket in a local with no `finally`, so the socket is closed only when the
    garbage collector finalises it, which warns `unclosed <socket.socket ...>`. Nothing in ecst
    can reach that socket. The suite turns warnings into errors, so without this the warning fails
    whichever test the collector happens to run in. Sockets to any other port (Connect's REST API,
    Postgres) still fail the suite when left unclosed.
    """
    for port in ports:
        socket_repr = rf"<socket\.socket [^>]*raddr=\([^)]*, {int(port)}[,)][^>]*>"
        for regex, category in ((rf"unclosed {socket_repr}", ResourceWarning),
                                (rf"Exception ignored in. {socket_repr}",
                                 pytest.PytestUnraisableExceptionWarning)):
            # pytest applies its ini filters when each test starts: this covers the tests to come
            config.addinivalue_line("filterwarnings", f"ignore:{regex}:{category.__module__}."
                                                      f"{category.__qualname__}")
            warnings.filterwarnings("ignore", message=regex, category=category)  # and this one


def start_stack(backend: str):
    if backend == "local":
        return LocalBackend()
    if backend == "testcontainers":
        from tests.integration.containers import ContainerBackend

        return ContainerBackend()
    raise ValueError(f"ECST_TEST_STACK={backend!r}: expected 'local' or 'testcontainers'")

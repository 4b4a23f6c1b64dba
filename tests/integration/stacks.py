"""Stack backends for the integration tests: the local stack (default, what CI runs) or
testcontainers (where a Docker engine exists). Both expose the same small interface."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

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


def start_stack(backend: str):
    if backend == "local":
        return LocalBackend()
    if backend == "testcontainers":
        from tests.integration.containers import ContainerBackend

        return ContainerBackend()
    raise ValueError(f"ECST_TEST_STACK={backend!r}: expected 'local' or 'testcontainers'")

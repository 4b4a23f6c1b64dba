"""Integration-test backend for machines with Docker (ECST_TEST_STACK=testcontainers): the
images of docker-compose.yml started with testcontainers, behind the same interface as the
local backend. Install with `pip install -e '.[docker]'`. CI has no Docker and runs `local`."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
ADMIN_PASSWORD = "ecst-dev"
CONNECTOR_PASSWORD = "connector-dev"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ContainerBackend:
    """Postgres, Kafka (KRaft) and Debezium Connect in Docker, on one private network."""

    def __init__(self) -> None:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.network import Network

        self.network = Network().__enter__()
        pg_port, kafka_port, connect_port = _free_port(), _free_port(), _free_port()

        self.postgres = (
            DockerContainer(COMPOSE["postgres"]["image"])
            .with_command(" ".join(COMPOSE["postgres"]["command"]))
            .with_env("POSTGRES_USER", "ecst").with_env("POSTGRES_PASSWORD", ADMIN_PASSWORD)
            .with_env("POSTGRES_DB", "producer")
            .with_network(self.network).with_network_aliases("postgres")
            .with_bind_ports(5432, pg_port)
        ).start()
        self.pg_port = pg_port
        self._wait_postgres()
        with self.producer_conn() as conn:
            conn.execute("CREATE ROLE ecst_connector WITH LOGIN REPLICATION NOSUPERUSER "
                         f"PASSWORD '{CONNECTOR_PASSWORD}'")

        kafka_env = dict(COMPOSE["kafka"]["environment"])
        kafka_env["KAFKA_LISTENERS"] = f"PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:{kafka_port}"
        kafka_env["KAFKA_ADVERTISED_LISTENERS"] = f"PLAINTEXT://kafka:9092,HOST://127.0.0.1:{kafka_port}"
        kafka = DockerContainer(COMPOSE["kafka"]["image"]).with_network(self.network)
        kafka = kafka.with_network_aliases("kafka").with_bind_ports(kafka_port, kafka_port)
        for k, v in kafka_env.items():
            kafka = kafka.with_env(k, str(v))
        self.kafka = kafka.start()
        self.bootstrap = f"127.0.0.1:{kafka_port}"
        self.kafka_ports = (kafka_port,)

        connect = DockerContainer(COMPOSE["connect"]["image"]).with_network(self.network)
        connect = connect.with_bind_ports(8083, connect_port)
        for k, v in COMPOSE["connect"]["environment"].items():
            connect = connect.with_env(k, str(v).replace("${ECST_CONNECTOR_PASSWORD:-connector-dev}",
                                                         CONNECTOR_PASSWORD))
        self.connect = connect.start()
        self.connect_url = f"http://127.0.0.1:{connect_port}"
        self._wait_connect()

    def _wait_postgres(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self.producer_conn() as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def _wait_connect(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"{self.connect_url}/connector-plugins", timeout=3)
                if r.ok and "PostgresConnector" in r.text:
                    return
            except requests.RequestException:
                pass
            time.sleep(2)
        raise RuntimeError(f"Debezium Connect at {self.connect_url} did not become ready")

    def producer_conn(self, dbname: str = "producer") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.pg_port, user="ecst",
                               password=ADMIN_PASSWORD, dbname=dbname, autocommit=True)

    def new_database(self, name: str) -> tuple[str, Callable[[], None]]:
        with self.producer_conn("postgres") as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with self.producer_conn("postgres") as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        return f"postgresql://ecst:{ADMIN_PASSWORD}@127.0.0.1:{self.pg_port}/{name}", drop

    def stop(self) -> None:
        for container in (self.connect, self.kafka, self.postgres):
            container.stop()
        self.network.__exit__(None, None, None)

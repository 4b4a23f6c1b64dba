"""The KRaft broker and the distributed Kafka Connect worker, run from Maven-resolved jars."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import requests

from ecst.exceptions import KafkaUnavailableError, StackError
from ecst.stack import process
from ecst.stack.private import UMASK, private_dir, write_private
from ecst.stack.secure import LISTENER, SecureListener

LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: org.apache.kafka.clients
        level: WARN
      - name: org.apache.kafka.common.config
        level: WARN
"""

DEBEZIUM_CLASS = "io.debezium.connector.postgresql.PostgresConnector"


def java() -> str:
    path = shutil.which("java")
    if path is None:
        raise StackError(
            "Java not found: install a JDK 17 or newer (`apt-get install openjdk-17-jre-headless`) "
            "and re-run"
        )
    return path


def _properties(values: dict[str, object]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


def _cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class JavaComponent:
    """A JVM process started with a marker so that only our own PID is ever signalled."""

    name = ""
    heap = "512m"

    def __init__(self, home: Path, jars: Path) -> None:
        self.home = home
        self.jars = jars
        self.dir = home / self.name
        self.pid_file = home / "run" / f"{self.name}.pid"
        self.log_file = home / "logs" / f"{self.name}.log"

    @property
    def marker(self) -> str:
        return f"-Decst.component={self.name}@{self.home}"

    @property
    def pid(self) -> int | None:
        return process.read_pid(self.pid_file, self.marker)

    def _java(self, main: str, *args: str, env: dict[str, str] | None = None) -> int:
        private_dir(self.home / "run")
        log4j = self.home / "log4j2.yaml"
        log4j.write_text(LOG4J2)
        argv = [
            java(), f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", self.marker, f"-Dlog4j2.configurationFile={log4j}",
            "-cp", str(self.jars / "kafka" / "*"), main, *args,
        ]
        return process.spawn(argv, log_file=self.log_file, pid_file=self.pid_file,
                             env={**os.environ, **(env or {})})

    def _died(self, what: str) -> StackError:
        return StackError(f"{what} exited during start-up (log {self.log_file}):\n"
                          f"{process.tail(self.log_file)}")

    def stop(self) -> bool:
        pid = self.pid
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        process.stop_pid(pid, timeout_s=45)
        self.pid_file.unlink(missing_ok=True)
        return True


class KafkaBroker(JavaComponent):
    """A single combined broker+controller KRaft node; with the secure profile on, a SASL_SSL
    listener besides the PLAINTEXT one (ecst/stack/secure.py)."""

    name = "kafka"
    heap = "768m"

    def __init__(self, home: Path, jars: Path, port: int, controller_port: int,
                 secure_port: int = 19094) -> None:
        super().__init__(home, jars)
        self.port = port
        self.controller_port = controller_port
        self.secure = SecureListener(home, secure_port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.dir / "server.properties"

    def _config_text(self) -> str:
        return _properties({
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.dir / "data",
            "num.partitions": 1,
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "log.cleaner.backoff.ms": 1000,
            **(self.secure.broker_properties(self.port, self.controller_port) if self.secure.enabled else {}),
        })

    def _config(self) -> Path:
        private_dir(self.dir)
        write_private(self.config_file, self._config_text())
        return self.config_file

    def needs_restart(self) -> bool:
        """True when the running broker was started with the secure profile and it is off now, or
        the other way round (nothing else: a broker started with other settings is reused, as
        always)."""
        if self.pid is None:
            return False
        try:
            running = self.config_file.read_text()
        except OSError:
            return False
        return (f"{LISTENER}://" in running) != self.secure.enabled

    def start(self, timeout_s: float = 90.0) -> int:
        if self.pid:
            if self.secure.enabled:
                self._ensure_user()
            return self.pid
        process.require_free(self.port, "Kafka broker", "ECST_KAFKA_PORT")
        process.require_free(self.controller_port, "Kafka controller", "ECST_CONTROLLER_PORT")
        if self.secure.enabled:
            process.require_free(self.secure.port, "Kafka SASL_SSL listener", "ECST_KAFKA_SECURE_PORT")
        config = self._config()
        if not (self.dir / "data" / "meta.properties").exists():
            self._format(config)
        pid = self._java("kafka.Kafka", str(config))
        self._wait(pid, timeout_s)
        if self.secure.enabled:
            self._ensure_user()
        return pid

    def _ensure_user(self) -> None:
        """The secure listener's SCRAM user, created once per formatted storage (the marker
        lives with the data, so a fresh format creates it again)."""
        marker = self.dir / "data" / ".ecst-scram-user"
        if marker.exists() and marker.read_text() == str(self.secure.state.stat().st_mtime_ns):
            return
        self.secure.create_user(self.bootstrap)
        write_private(marker, str(self.secure.state.stat().st_mtime_ns))

    def _format(self, config: Path) -> None:
        result = subprocess.run(
            [java(), "-cp", str(self.jars / "kafka" / "*"),
             f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}",
             "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config)],
            capture_output=True, text=True, umask=UMASK,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed: {result.stdout[-800:]}{result.stderr[-800:]}")

    def _wait(self, pid: int, timeout_s: float) -> None:
        from ecst import kafka

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not process.alive(pid):
                raise self._died("Kafka")
            if process.port_in_use(self.port):
                try:
                    admin = kafka.admin(self.bootstrap, request_timeout_ms=5000)
                    try:
                        with kafka.reaching(kafka.as_settings(self.bootstrap)):
                            admin.describe_cluster()
                    finally:
                        admin.close()
                    return
                except KafkaUnavailableError:
                    pass
            time.sleep(0.5)
        raise StackError(f"Kafka did not become ready in {timeout_s:.0f} s (log {self.log_file})")


# A cluster of one worker (here and in docker-compose.yml): when the worker loses the broker for
# longer than a heartbeat (a broker restart), it revokes its connectors and tasks and rejoins the
# group as a new member; the default scheduled.rebalance.max.delay.ms (5 min) would then keep
# them unassigned for 5 minutes, waiting for a "departed" worker that is this one. 0 reassigns them
# at once (KAFKA-15693). A cluster of several workers may want the delay back.
SINGLE_WORKER = {"scheduled.rebalance.max.delay.ms": 0}


class ConnectWorker(JavaComponent):
    """A distributed-mode Kafka Connect worker with the Debezium Postgres plugin."""

    name = "connect"
    heap = "1g"

    def __init__(self, home: Path, jars: Path, port: int, bootstrap: str,
                 worker_env: dict[str, str]) -> None:
        super().__init__(home, jars)
        self.port = port
        self.bootstrap = bootstrap
        self.worker_env = worker_env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        private_dir(self.dir)
        path = self.dir / "connect-distributed.properties"
        write_private(path, _properties({
            "bootstrap.servers": self.bootstrap,
            "group.id": "ecst-connect",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "config.storage.topic": "ecst-connect-configs",
            "offset.storage.topic": "ecst-connect-offsets",
            "status.storage.topic": "ecst-connect-status",
            "config.storage.replication.factor": 1,
            "offset.storage.replication.factor": 1,
            "status.storage.replication.factor": 1,
            "offset.flush.interval.ms": 1000,
            **SINGLE_WORKER,
            "listeners": self.url,
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": self.port,
            "plugin.path": self.jars / "plugins",
            "plugin.discovery": "service_load",
            # ${env:VAR} in connector configs is resolved here, in the worker: secrets given to
            # the worker's environment never enter the REST API or the config topic.
            "config.providers": "env",
            "config.providers.env.class":
                "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
            "topic.creation.enable": "true",
            "connector.client.config.override.policy": "All",
        }))
        return path

    def start(self, timeout_s: float = 180.0) -> int:
        if self.pid:
            return self.pid
        process.require_free(self.port, "Kafka Connect REST", "ECST_CONNECT_PORT")
        config = self._config()
        pid = self._java("org.apache.kafka.connect.cli.ConnectDistributed", str(config),
                         env=self.worker_env)
        self._wait(pid, timeout_s)
        return pid

    def _wait(self, pid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not process.alive(pid):
                raise self._died("Kafka Connect")
            try:
                r = requests.get(f"{self.url}/connector-plugins", timeout=3)
                if r.ok and any(p.get("class") == DEBEZIUM_CLASS for p in r.json()):
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        raise StackError(
            f"Kafka Connect did not become ready with the Debezium plugin in {timeout_s:.0f} s "
            f"(log {self.log_file})"
        )

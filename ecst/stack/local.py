"""`ecst stack up|down|status|env`: the local stack as one object.

Everything lives under the stack home (`.ecst/` by default): jars, logs, PID files, the Kafka
log folder, generated credentials; all but the jars owner-only. `up` is idempotent: what already
runs is reused.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ecst.connectors import producer
from ecst.connectors.producer import Target
from ecst.exceptions import StackError
from ecst.settings import Secret, Settings, register_secret
from ecst.stack import jars, process
from ecst.stack.kafka import ConnectWorker, KafkaBroker, java
from ecst.stack.postgres import ADMIN_USER, CONNECTOR_ROLE, PRODUCER_DB, PostgresCluster
from ecst.stack.private import restrict, write_private


@dataclass(frozen=True)
class Component:
    """One line of `ecst stack status`."""

    name: str
    running: bool
    pid: int | None
    address: str


class LocalStack:
    """The private Postgres cluster, the KRaft broker and the Connect worker of one home."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home
        self.jars_dir = self.home / "jars"
        creds = self._credentials()
        for value in creds.values():
            register_secret(value)
        self.postgres = PostgresCluster(
            self.home, settings.pg_port, creds["admin_password"], creds["connector_password"]
        )
        self.kafka = KafkaBroker(self.home, self.jars_dir, settings.kafka_port,
                                 settings.controller_port, settings.kafka_secure_port)
        self.connect = ConnectWorker(
            self.home, self.jars_dir, settings.connect_port, self.kafka.bootstrap,
            worker_env=self.worker_env(),
        )

    def _credentials(self) -> dict[str, str]:
        """Passwords generated once per home and kept in a 0600 file: nothing is committed."""
        path = self.home / "credentials.json"
        try:
            if path.exists():
                return json.loads(path.read_text())
            self.home.mkdir(parents=True, exist_ok=True)
            creds = {
                "admin_password": secrets.token_urlsafe(18),
                "connector_password": secrets.token_urlsafe(18),
            }
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(creds, f)
        except OSError as exc:
            raise StackError(f"cannot keep the local stack's files in {self.home} ({exc.strerror or exc}: "
                             f"{exc.filename}): pass --home (or set ECST_HOME) to a folder you can "
                             "write") from exc
        return creds

    # -- what clients need ----------------------------------------------------------------
    def worker_env(self) -> dict[str, str]:
        """Environment of the Connect worker, read by `${env:...}` in connector YAML."""
        return {
            "ECST_PGHOST": "127.0.0.1",
            "ECST_PGPORT": str(self.settings.pg_port),
            "ECST_PGDATABASE": PRODUCER_DB,
            "ECST_CONNECTOR_USER": CONNECTOR_ROLE,
            "ECST_CONNECTOR_PASSWORD": self.postgres.connector_password,
            "ECST_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
        }

    @property
    def producer_url(self) -> Secret:
        pw = self.postgres.admin_password
        return Secret(f"postgresql://{ADMIN_USER}:{pw}@127.0.0.1:{self.settings.pg_port}/{PRODUCER_DB}")

    @property
    def pgpass_file(self) -> Path:
        path = self.home / "pgpass"
        line = f"127.0.0.1:{self.settings.pg_port}:*:{ADMIN_USER}:{self.postgres.admin_password}\n"
        if not path.exists() or path.read_text() != line:
            write_private(path, line)
        restrict(path)  # libpq ignores a password file that others can read
        return path

    def env_lines(self) -> list[str]:
        """`export` lines for a shell: no password is printed, libpq reads it from PGPASSFILE."""
        s = self.settings
        values = {
            "ECST_PRODUCER_URL": f"postgresql://{ADMIN_USER}@127.0.0.1:{s.pg_port}/{PRODUCER_DB}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(s.pg_port),
            "PGUSER": ADMIN_USER,
            "PGDATABASE": PRODUCER_DB,
            "PGPASSFILE": str(self.pgpass_file),
            "ECST_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "ECST_CONNECT_URL": self.connect.url,
            "ECST_CONNECTOR_USER": CONNECTOR_ROLE,  # what ${env:ECST_CONNECTOR_USER} means
        }
        return [f"export {k}={shlex.quote(v)}" for k, v in values.items()]

    def secure_env_lines(self, password: bool = False) -> list[str]:
        """`export` lines that point ecst at the secure listener (`ecst stack env --secure`); the
        password only with `password` (else a comment says where it is)."""
        if not self.kafka.secure.enabled:
            raise StackError("the secure profile is off in this home: run `ecst stack up --secure` first")
        sec = self.kafka.secure.security()
        values = {
            "ECST_BOOTSTRAP_SERVERS": self.kafka.secure.bootstrap,
            "ECST_KAFKA_SECURITY_PROTOCOL": sec.protocol,
            "ECST_KAFKA_SASL_MECHANISM": str(sec.mechanism),
            "ECST_KAFKA_SASL_USERNAME": str(sec.username),
            "ECST_KAFKA_SSL_CAFILE": str(sec.cafile),
        }
        lines = [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
        if password and sec.password is not None:
            lines.append(f"export ECST_KAFKA_SASL_PASSWORD={shlex.quote(sec.password.reveal())}")
        else:
            lines.append(f"# ECST_KAFKA_SASL_PASSWORD: the \"password\" in {self.kafka.secure.state} "
                         "(or `ecst stack env --secure --show-password`)")
        return lines

    # -- lifecycle ------------------------------------------------------------------------
    def preflight(self) -> None:
        """Fail in one line, before any work, on a missing Java or a taken port."""
        s = self.settings
        checks = [
            (self.postgres.pid, s.pg_port, "PostgreSQL", "ECST_PG_PORT"),
            (self.kafka.pid, s.kafka_port, "Kafka broker", "ECST_KAFKA_PORT"),
            (self.kafka.pid, s.controller_port, "Kafka controller", "ECST_CONTROLLER_PORT"),
            (self.connect.pid, s.connect_port, "Kafka Connect REST", "ECST_CONNECT_PORT"),
        ]
        if self.kafka.secure.enabled:
            checks.append((self.kafka.pid, s.kafka_secure_port, "Kafka SASL_SSL listener",
                           "ECST_KAFKA_SECURE_PORT"))
        if not (self.kafka.pid and self.connect.pid):
            java()
        for running, port, what, var in checks:
            if not running:
                process.require_free(port, what, var)

    def make_private(self) -> None:
        """Kafka's data (users' rows), the logs, the demo's state and the secrets owner-only: 0700
        folders, 0600 files, also where an earlier version left them readable. The home itself keeps
        its mode (as root, the `postgres` OS user may need to pass through it); the jars stay public."""
        for name in ("kafka", "connect", "logs", "run", "demo", "credentials.json", "pgpass", "secure"):
            restrict(self.home / name)
        self.postgres.make_private()

    def up(self, log: Callable[[str], None] = lambda msg: None,
           secure: bool | None = None) -> list[Component]:
        """Install what is missing, start what is not running, health-check everything.
        `secure` True turns the secure profile on (a SASL_SSL listener), False off, None keeps
        this home's choice; a running broker whose listeners change is restarted."""
        if secure and self.kafka.secure.enable():
            log(f"made the secure profile's CA, broker certificate and password in {self.kafka.secure.dir}")
        elif secure is False and self.kafka.secure.disable():
            log("secure profile turned off")
        if self.kafka.needs_restart():
            log("restarting Kafka: its listeners changed")
            self.kafka.stop()
        self.preflight()
        self.make_private()
        if not (self.kafka.pid and self.connect.pid):
            log("resolving Kafka, Connect and Debezium jars (Maven)")
            jars.ensure_jars(self.settings.project_dir, self.jars_dir, self.home / "logs" / "maven.log")
        if self.postgres.ensure_created():
            log(f"created PostgreSQL cluster in {self.postgres.paths.data}")
        log(f"starting PostgreSQL on 127.0.0.1:{self.settings.pg_port}")
        self.postgres.start()
        log(f"starting Kafka (KRaft) on {self.kafka.bootstrap}" + (
            f", SASL_SSL on {self.kafka.secure.bootstrap}" if self.kafka.secure.enabled else ""))
        self.kafka.start()
        log(f"starting Kafka Connect on {self.connect.url}")
        self.connect.start()
        return self.status()

    def down(self) -> list[str]:
        """Stop the processes this home started, by PID, in reverse order."""
        stopped = []
        if self.connect.stop():
            stopped.append("connect")
        if self.kafka.stop():
            stopped.append("kafka")
        if self.postgres.stop():
            stopped.append("postgres")
        return stopped

    def status(self) -> list[Component]:
        pg_pid = self.postgres.pid
        return [
            Component("postgres", pg_pid is not None, pg_pid,
                      f"postgresql://127.0.0.1:{self.settings.pg_port}/{PRODUCER_DB}"),
            Component("kafka", self.kafka.pid is not None, self.kafka.pid, self.kafka.bootstrap + (
                f" SASL_SSL {self.kafka.secure.bootstrap}" if self.kafka.secure.enabled else "")),
            Component("connect", self.connect.pid is not None, self.connect.pid, self.connect.url),
        ]

    def is_up(self) -> bool:
        return all(c.running for c in self.status()) and process.port_in_use(self.connect.port)


def local_producer(settings: Settings) -> Target | None:
    """(conninfo, password) of this home's local stack's producer database, if it has one."""
    if (settings.home / "credentials.json").exists():
        stack = LocalStack(settings)
        return stack.postgres.conninfo(), stack.postgres.admin_password
    return None


def producer_target(settings: Settings, url: str | None = None) -> Target | None:
    """`ecst.connectors.producer.producer_target`, falling back to the local stack's database:
    `url`, else ECST_PRODUCER_URL, else the local stack's when this home has one; None otherwise."""
    return producer.producer_target(settings, url, fallback=local_producer)

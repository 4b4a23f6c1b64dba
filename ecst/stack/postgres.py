"""The stack's private PostgreSQL cluster: found or installed from Debian, created with
`initdb` in the stack's own folder, `wal_level=logical`, on its own port. A system cluster
is never touched.

When ecst runs as root the server runs as the `postgres` OS user (Postgres refuses root), and
the data folder moves to /var/lib/ecst/<id>/postgres/ if that user cannot enter the stack home
(a home made by `mktemp -d` is 0700) or a folder above it.
"""

from __future__ import annotations

import glob
import grp
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from ecst.exceptions import StackError
from ecst.stack import process
from ecst.stack.private import open_private, private_dir, restrict, write_private

ADMIN_USER = "ecst"
CONNECTOR_ROLE = "ecst_connector"
PRODUCER_DB = "producer"

HBA_CONF = """\
# Written by `ecst stack up` at every start (initdb's pg_hba.conf, which allows physical
# replication connections, e.g. pg_basebackup, to any REPLICATION role, is not used).
host all all 127.0.0.1/32 scram-sha-256
"""
SERVER_CONF = """\
# Written by `ecst stack up` at every start; edit Settings, not this file.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
wal_level = logical
max_wal_senders = 32
max_replication_slots = 32
max_connections = 200
# A slot nobody reads is invalidated past this much WAL instead of filling the disk (its
# connector must then snapshot again): `ecst connectors doctor` warns when it is unlimited.
max_slot_wal_keep_size = '4GB'
# Logins over loopback TCP only, and no physical replication connection: Debezium's logical
# replication connection matches its database, not the `replication` keyword of pg_hba.conf.
hba_file = '{hba}'
# A disposable development cluster: trade crash durability for speed.
fsync = off
full_page_writes = off
synchronous_commit = off
"""


def find_bindir(install: bool = True) -> Path:
    """The newest installed PostgreSQL server's bin folder; apt-get installs one if none."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    if not install:
        raise StackError("PostgreSQL server not found: install it with `apt-get install postgresql`")
    if os.geteuid() != 0:
        raise StackError(
            "PostgreSQL server not found: run `sudo apt-get install postgresql`, then re-run"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(
                f"`{' '.join(argv)}` failed (exit {result.returncode}): "
                f"{result.stderr.strip().splitlines()[-1:] or ''}; install postgresql by hand"
            )
    return find_bindir(install=False)


def blocking_folder(path: Path, uid: int, gids: Collection[int]) -> Path | None:
    """The highest existing folder on the way to `path` that the user `uid` (in groups `gids`)
    may not enter, as the kernel decides it from owner, group and other bits; None if none."""
    for folder in [*reversed(path.parents), path]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            break  # created later, by us
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


def _blocking_for(path: Path, user: str) -> Path | None:
    pw = pwd.getpwnam(user)
    gids = {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    return blocking_folder(path, pw.pw_uid, gids)


@dataclass(frozen=True)
class PostgresPaths:
    data: Path
    log: Path
    run_as: str | None  # OS user the server runs as (None: the current user)


def paths_for(home: Path) -> PostgresPaths:
    """Where the cluster lives for this stack home, and which OS user runs it."""
    if os.geteuid() != 0:
        return PostgresPaths(home / "postgres" / "data", home / "postgres" / "postgres.log", None)
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise StackError(
            "running as root needs the `postgres` OS user to run the server: "
            "install the postgresql package (`apt-get install postgresql`)"
        ) from exc
    fallback = Path("/var/lib/ecst") / hashlib.sha256(str(home).encode()).hexdigest()[:12]
    if (home / "postgres" / "data" / "PG_VERSION").exists():
        base = home  # a cluster stays where it was created
    elif (fallback / "postgres" / "data" / "PG_VERSION").exists():
        base = fallback
    else:
        # the `postgres` user must pass through the home itself (mktemp -d makes it 0700)
        base = home if _blocking_for(home / "postgres", "postgres") is None else fallback
    return PostgresPaths(base / "postgres" / "data", base / "postgres" / "postgres.log", "postgres")


class PostgresCluster:
    """Creates, starts, checks and stops the private cluster."""

    def __init__(self, home: Path, port: int, admin_password: str, connector_password: str) -> None:
        self.home = home
        self.port = port
        self.admin_password = admin_password
        self.connector_password = connector_password
        self.paths = paths_for(home)

    # -- helpers --------------------------------------------------------------------------
    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        kwargs: dict = {"capture_output": True, "text": True}
        if self.paths.run_as:
            kwargs.update(user=self.paths.run_as, group=self.paths.run_as, extra_groups=[])
        return subprocess.run(argv, cwd="/", **kwargs)

    def _chown(self, path: Path) -> None:
        if self.paths.run_as:
            pw = pwd.getpwnam(self.paths.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def conninfo(self, dbname: str = PRODUCER_DB) -> str:
        return f"host=127.0.0.1 port={self.port} user={ADMIN_USER} dbname={dbname}"

    def connect(self, dbname: str = PRODUCER_DB, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(
            self.conninfo(dbname), password=self.admin_password, autocommit=autocommit,
            connect_timeout=5,
        )

    @property
    def pid(self) -> int | None:
        pid_file = self.paths.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if process.alive(pid) and "postgres" in process.cmdline(pid) else None

    def make_private(self) -> None:
        """The cluster's folder and server log owner-only (the data folder is Postgres' own, 0700);
        a folder and log left readable by an earlier version are fixed."""
        base = self.paths.data.parent
        restrict(base, recursive=False)
        restrict(self.paths.log)
        restrict(self.paths.data / "ecst.conf")

    # -- lifecycle ------------------------------------------------------------------------
    def ensure_created(self) -> bool:
        """initdb once; True if the cluster was created now."""
        if (self.paths.data / "PG_VERSION").exists():
            return False
        bindir = find_bindir()
        base = private_dir(self.paths.data.parent)
        self._chown(base)
        if self.paths.run_as and (blocked := _blocking_for(base, self.paths.run_as)):
            raise StackError(
                f"the `{self.paths.run_as}` OS user, which runs the server, cannot enter {blocked} "
                f"on the way to {base}: `chmod o+x {blocked}`, or choose another ECST_HOME"
            )
        pwfile = base / ".pwfile"
        with os.fdopen(open_private(pwfile, os.O_WRONLY | os.O_TRUNC), "w") as f:
            f.write(self.admin_password + "\n")
        self._chown(pwfile)
        try:
            result = self._run([
                str(bindir / "initdb"), "-D", str(self.paths.data), "-U", ADMIN_USER,
                f"--pwfile={pwfile}", "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions",
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        conf = self.paths.data / "postgresql.conf"
        with open(conf, "a") as f:
            f.write("\ninclude_if_exists = 'ecst.conf'\n")
        return True

    def start(self) -> int:
        if self.pid:
            return self.pid
        process.require_free(self.port, "PostgreSQL", "ECST_PG_PORT")
        bindir = find_bindir()
        hba = self.paths.data / "ecst_hba.conf"
        write_private(hba, HBA_CONF)
        self._chown(hba)
        conf = self.paths.data / "ecst.conf"
        write_private(conf, SERVER_CONF.format(port=self.port, hba=hba))
        self._chown(conf)
        if not self.paths.log.exists():
            os.close(open_private(self.paths.log))
            self._chown(self.paths.log)
        self.make_private()
        result = self._run([
            str(bindir / "pg_ctl"), "-D", str(self.paths.data), "-l", str(self.paths.log),
            "-w", "-t", "60", "start",
        ])
        if result.returncode != 0 or not self.pid:
            raise StackError(
                f"PostgreSQL did not start (log {self.paths.log}):\n{process.tail(self.paths.log)}"
            )
        self.wait_ready()
        self._bootstrap()
        return self.pid

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self.connect("postgres") as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise StackError(f"PostgreSQL on port {self.port} is not answering: {exc}") from exc
                time.sleep(0.3)

    def _bootstrap(self) -> None:
        """The producer database and the connector's least-privilege replication role."""
        with self.connect("postgres") as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (PRODUCER_DB,)).fetchone():
                conn.execute(f'CREATE DATABASE "{PRODUCER_DB}"')
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                  (CONNECTOR_ROLE,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                f"{verb} ROLE {CONNECTOR_ROLE} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB "
                f"NOCREATEROLE PASSWORD {sql.Literal(self.connector_password).as_string(conn)}"
            )
            conn.execute(f'GRANT CONNECT ON DATABASE "{PRODUCER_DB}" TO {CONNECTOR_ROLE}')

    def stop(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        # SIGINT is Postgres' "fast" shutdown, what `pg_ctl stop -m fast` sends.
        process.stop_pid(pid, sig=signal.SIGINT, timeout_s=60)
        return True

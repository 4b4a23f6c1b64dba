"""One rebuild at a time per state: a second `ecst rebootstrap` on a state already rebuilding is refused.

Every rebuild of a database writes the same shadow copy (`ecst_shadow__*`). Two at once would both
write it, the first to finish would swap it in, and the second would then swap in what it had
written since: a partial copy, with every key it had not read yet gone from the live state. And
a second run with `--restart` would discard the first one's shadow under it. So `rebuild` holds
this lock from before it looks at the shadow until it has swapped it in or given up.

The lock belongs to the process, not to a record: it is released when the process ends, however
it ends (a crash, `kill -9`, a lost pod), so nothing stale is ever left to clear by hand.
- PostgreSQL: a session advisory lock, keyed by the database and the schema, on a connection kept
  open for the run. If that connection is lost (a restart of the server, a network cut), the lock
  goes with it; the rebuild's own next statement then fails on the same outage. A server that
  cannot be reached when the lock is asked for is the store's StateStoreUnavailableError (or
  StateStoreError when it refuses the credentials or the database), as for any other statement.
- SQLite: an exclusive `flock` on a file beside the database (`<database>.rebuild-lock`, left in
  place), which names the holder. An in-memory database is never shared: no lock.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ecst.consumer.outage import store_error
from ecst.exceptions import RebuildError

LOCK_SUFFIX = ".rebuild-lock"
LOCK_WAIT_S = 5.0  # a holder killed a moment ago: its server session may take that long to end
LOCK_RETRY_S = 0.2
# two int4 keys: the first names ecst's rebuilds, the second this database and schema
_PG_KEYS = "hashtext('ecst:rebuild'), hashtext(current_database() || '.' || current_schema())"
_PG_HOLDER = text(
    "SELECT a.pid, a.client_addr, a.application_name, a.backend_start FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = hashtext('ecst:rebuild')::oid "
    "AND l.objid = hashtext(current_database() || '.' || current_schema())::oid LIMIT 1")
_BUSY = ("another `ecst rebootstrap` is running on this state ({holder}): wait for it to finish "
         "(`ecst status` shows its progress); two rebuilds would share one shadow copy")


class RebuildLock:
    """Held by one rebuild of the state behind `engine` (see the module docstring); `where`
    names that state in messages (its URL, password hidden). A lock held by another is asked
    for again for `wait_s` (default LOCK_WAIT_S) before it is refused."""

    def __init__(self, engine: Engine, where: str, wait_s: float | None = None) -> None:
        self.engine, self.where = engine, where
        self.wait_s = LOCK_WAIT_S if wait_s is None else wait_s
        self._conn: Connection | None = None
        self._fd: int | None = None

    def __enter__(self) -> RebuildLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise RebuildError naming who holds it."""
        kinds = {"postgresql": self._acquire_postgres, "sqlite": self._acquire_sqlite}
        take = kinds.get(self.engine.dialect.name)
        if take is None:
            return
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                take()
                return
            except RebuildError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_RETRY_S)

    def release(self) -> None:
        """Let the next rebuild run (nothing when the lock is not held)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.execute(text(f"SELECT pg_advisory_unlock({_PG_KEYS})"))
                conn.commit()
            except Exception:  # noqa: BLE001 - closing the session frees its locks anyway
                pass
            finally:
                conn.close()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # and with it the flock

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    def _acquire_postgres(self) -> None:
        if self._conn is not None:
            return
        try:
            conn = self.engine.connect()
            try:
                got = conn.execute(text(f"SELECT pg_try_advisory_lock({_PG_KEYS})")).scalar()
                holder = None if got else conn.execute(_PG_HOLDER).first()
                conn.commit()  # a session lock outlives the transaction; the connection stays open
            except BaseException:
                conn.close()
                raise
        except SQLAlchemyError as exc:
            error = store_error(exc, self.where)
            if error is None:
                raise  # an error in the statement itself: a bug, with its traceback
            raise error from exc
        if got:
            self._conn = conn
            return
        conn.close()
        if holder is None:
            who = f"{self.where}, holder just gone: run the command again"
        else:
            pid, addr, app, since = holder
            started = since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if since else "?"
            who = (f"{self.where}, held by PostgreSQL session {pid} from {addr or 'a local socket'}"
                   f"{f' ({app})' if app else ''}, connected since {started}")
        raise RebuildError(_BUSY.format(holder=who))

    def _acquire_sqlite(self) -> None:
        database = self.engine.url.database
        if self._fd is not None or database in (None, "", ":memory:"):
            return
        path = Path(database).expanduser().resolve()
        lock = path.with_name(path.name + LOCK_SUFFIX)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise RebuildError(f"cannot open the rebuild lock file {lock}: {exc.strerror}: the state's "
                               "folder must be writable by the user running ecst") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "holder unknown"
            os.close(fd)
            raise RebuildError(_BUSY.format(holder=f"{lock}: {holder}")) from None
        except BaseException:
            os.close(fd)
            raise
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now}\n".encode(), 0)
        self._fd = fd

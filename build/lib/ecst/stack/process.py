"""Starting, finding and stopping the stack's own processes by PID: nothing else is touched.

A process is ours when its PID file exists and `/proc/<pid>/cmdline` still carries the marker
we started it with (so a recycled PID belonging to someone else is never signalled).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ecst.exceptions import PortInUseError, StackError
from ecst.stack.private import UMASK, open_private, private_dir, write_private

# Popen handles of the daemons this process started: kept so they are never garbage-collected
# while running (which would warn) and so that stopping one can reap it.
_CHILDREN: dict[int, subprocess.Popen] = {}


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def require_free(port: int, what: str, env_var: str) -> None:
    """Raise PortInUseError, saying what to do, when `port` is taken."""
    if port_in_use(port):
        raise PortInUseError(
            f"port {port} ({what}) is already in use by another process: stop that process "
            f"or choose another port with {env_var}=<port>"
        )


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:  # a child of ours that exited: reaped now
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return status != "Z"
    except OSError:
        return False


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The PID in `pid_file` if that process is alive and carries `marker`, else None."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if alive(pid) and marker in cmdline(pid):
        return pid
    return None


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a long-running process in its own session, output to an owner-only `log_file`; what
    the process creates is owner-only too (umask 077)."""
    private_dir(log_file.parent)
    with os.fdopen(open_private(log_file), "ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                umask=UMASK,
            )
        except FileNotFoundError as exc:
            raise StackError(f"cannot run {argv[0]!r}: {exc.strerror}") from exc
    _CHILDREN[proc.pid] = proc
    write_private(pid_file, f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> bool:
    """Signal `pid`, wait for it to exit, SIGKILL it after `timeout_s`. True if it exited."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            _reap(pid)
            return True
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(50):
        if not alive(pid):
            _reap(pid)
            return True
        time.sleep(0.1)
    return False


def _reap(pid: int) -> None:
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        proc.wait()
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

"""Owner-only files and folders under the stack home.

Kafka's log folder holds the captured rows (users' emails and names), the logs can quote them, and
the home holds passwords: none of it is for other users of the machine. Folders are 0700, files 0600,
and the stack's processes run with umask 077 so that what they create stays that way. `restrict`
takes the group and other bits off a tree an earlier version left readable, so an existing home is
fixed on the next `ecst stack up`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ecst.exceptions import StackError

UMASK = 0o077  # for the stack's own processes: 0700 folders, 0600 files


def _chmod(path: Path, mode: int, top: Path) -> None:
    try:
        os.chmod(path, mode)
    except FileNotFoundError:
        pass  # removed meanwhile (Kafka deletes and renames segments while it runs)
    except OSError as exc:
        raise StackError(
            f"cannot make {path} private ({exc.strerror}): run `chmod -R go= {top}` as its owner"
        ) from exc


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter (0700), created if missing."""
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        _chmod(path, 0o700, path)
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """A file descriptor on `path`, created 0600 if missing (an existing file keeps its mode)."""
    return os.open(path, flags | os.O_CREAT, 0o600)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, owner-only (0600) even if it existed with a wider mode."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "w") as f:
        f.write(text)
    restrict(path)


def _walk(path: Path) -> Iterator[Path]:
    yield path
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                yield Path(folder, name)


def restrict(path: Path, recursive: bool = True) -> None:
    """Take group and other permissions off `path` (and everything below it); symlinks are left."""
    if not path.exists():
        return
    for entry in _walk(path) if recursive else [path]:
        try:
            st = entry.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            _chmod(entry, stat.S_IMODE(st.st_mode) & ~0o077, path)

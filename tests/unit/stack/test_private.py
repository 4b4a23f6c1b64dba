"""Owner-only folders and files under the stack home."""

import os
import stat
from pathlib import Path

from ecst.stack.private import open_private, private_dir, restrict


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_restrict_takes_group_and_other_bits_off_a_whole_tree(tmp_path):
    top = tmp_path / "kafka"
    (top / "data" / "users-0").mkdir(parents=True)
    segment = top / "data" / "users-0" / "00000000000000000000.log"
    segment.write_text("alice@example.com")
    for path in (top, top / "data", top / "data" / "users-0"):
        path.chmod(0o755)
    segment.chmod(0o644)
    restrict(top)
    assert [mode(p) for p in (top, top / "data", top / "data" / "users-0", segment)] == [
        0o700, 0o700, 0o700, 0o600]


def test_restrict_leaves_symlinks_and_their_targets_and_missing_paths(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("")
    outside.chmod(0o644)
    top = tmp_path / "logs"
    top.mkdir()
    (top / "link").symlink_to(outside)
    restrict(top)
    restrict(tmp_path / "missing")
    assert mode(top) == 0o700 and mode(outside) == 0o644


def test_restrict_not_recursive_touches_the_folder_only(tmp_path):
    top = tmp_path / "postgres"
    (top / "data").mkdir(parents=True)
    top.chmod(0o755)
    (top / "data").chmod(0o750)  # Postgres' own mode (group access) is left alone
    restrict(top, recursive=False)
    assert (mode(top), mode(top / "data")) == (0o700, 0o750)


def test_new_folders_and_files_are_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        folder = private_dir(tmp_path / "a" / "logs")
        os.close(open_private(folder / "kafka.log"))
    finally:
        os.umask(old)
    assert (mode(folder), mode(folder / "kafka.log")) == (0o700, 0o600)

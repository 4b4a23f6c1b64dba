"""Where the private cluster may live: a folder the `postgres` OS user can reach."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ecst.stack.postgres import blocking_folder

OTHER_UID = os.getuid() + 4242  # a user that owns nothing here


@pytest.fixture
def top():
    """A folder under /tmp that anyone may enter, as `mktemp -d` then `chmod 711` makes it."""
    path = Path(tempfile.mkdtemp())
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


def test_a_mktemp_home_blocks_every_other_user(top):
    home = top / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    assert blocking_folder(home / "postgres", OTHER_UID, set()) == home
    assert blocking_folder(home / "postgres", os.getuid(), set()) is None  # its owner passes


def test_a_folder_others_may_enter_blocks_nobody(top):
    home = top / "home"
    home.mkdir()
    home.chmod(0o701)
    assert blocking_folder(home / "postgres", OTHER_UID, set()) is None


def test_the_group_bit_counts_for_a_member_only(top):
    home = top / "home"
    home.mkdir()
    home.chmod(0o710)
    assert blocking_folder(home, OTHER_UID, {home.stat().st_gid}) is None
    assert blocking_folder(home, OTHER_UID, set()) == home


def test_the_highest_blocking_folder_is_named(top):
    outer = top / "outer"
    (outer / "inner").mkdir(parents=True)
    outer.chmod(0o700)
    (outer / "inner").chmod(0o700)
    assert blocking_folder(outer / "inner" / "postgres", OTHER_UID, set()) == outer


"""The local stack's home: a folder that cannot hold its files is one StackError saying what to do."""

import pytest

from ecst.exceptions import StackError
from ecst.settings import Settings
from ecst.stack.local import LocalStack


def test_a_home_that_cannot_be_created_says_to_pass_another(tmp_path):
    (tmp_path / "file").write_text("")
    home = tmp_path / "file" / "home"
    expected = rf"^cannot keep the local stack's files in {home} \(.*\): pass --home \(or set ECST_HOME\) to"
    with pytest.raises(StackError, match=expected + " a folder you can write$"):
        LocalStack(Settings(home=home))

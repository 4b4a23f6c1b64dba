from pathlib import Path

import pytest

from ecst.exceptions import ConfigError
from ecst.settings import Secret, Settings, mask_url


def test_url_passwords_are_masked():
    assert mask_url("postgresql://u:pa:ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_secret_never_prints_its_value():
    s = Secret("hunter2")
    assert "hunter2" not in f"{s} {s!r}" and s.reveal() == "hunter2"


def test_environment_then_overrides():
    s = Settings.from_env({"ECST_PG_PORT": "6000", "ECST_HOME": "/tmp/x",
                           "ECST_STATE_URL": "postgresql://a:b@h/d"}, kafka_port=7000)
    assert (s.pg_port, s.kafka_port, s.home) == (6000, 7000, Path("/tmp/x"))
    assert s.effective_bootstrap_servers == "127.0.0.1:7000"
    assert s.describe()["state_url"] == "postgresql://a:***@h/d"
    assert "b@h" not in repr(s)


def test_bad_integer_names_the_variable():
    with pytest.raises(ConfigError, match="ECST_PG_PORT='x'"):
        Settings.from_env({"ECST_PG_PORT": "x"})

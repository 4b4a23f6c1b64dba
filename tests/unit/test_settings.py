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


def test_logs_never_carry_a_secret(caplog):
    import logging

    from ecst.settings import RedactingFilter

    Secret("sup3r-s3cret-value")
    Secret("postgresql://svc:db-pass-123@db:5432/app")
    logger = logging.getLogger("ecst.test.redaction")
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="ecst.test.redaction"):
        logger.info("connecting with %s to %s", "sup3r-s3cret-value", "postgresql://svc:db-pass-123@db/app")
        logger.info("plain url postgresql://u:another-pw@h/db")
        try:
            raise RuntimeError("failed: password db-pass-123 rejected")
        except RuntimeError:
            logger.exception("boom")
    text = caplog.text
    assert "sup3r-s3cret-value" not in text and "db-pass-123" not in text and "another-pw" not in text
    assert "connecting with *** to postgresql://svc:***@db/app" in text


def test_a_url_without_a_password_stays_readable_in_messages():
    from ecst.settings import redact

    Secret("sqlite:///state/users-state.db")
    Secret("postgresql://svc@db/app?sslmode=require&password=query-pw-123")
    assert redact("sqlite:///state/users-state.db holds no ecst state") == (
        "sqlite:///state/users-state.db holds no ecst state")
    assert "query-pw-123" not in redact("connecting with password=query-pw-123")

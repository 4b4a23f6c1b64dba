"""Log lines: the level and format settings, JSON lines with their fields, secrets masked in both
formats, and the line of each applied batch."""

import io
import json
import logging
from collections import Counter

import pytest
from click.testing import CliRunner

from ecst.cli.main import cli
from ecst.consumer.runner import log_batch
from ecst.consumer.writes import ApplyStats
from ecst.exceptions import ConfigError
from ecst.logs import configure_logging, setup_logging
from ecst.settings import Secret, Settings


@pytest.fixture
def logs():
    """A fresh ecst handler writing into a buffer (removed afterwards, levels restored)."""
    buffer = io.StringIO()
    ecst, kafka, root = (logging.getLogger(n) for n in ("ecst", "kafka", ""))
    levels = (ecst.level, kafka.level, root.level)
    handlers = []

    def install(level="INFO", fmt="text"):
        handlers.append(setup_logging(level, fmt, stream=buffer))
        return buffer

    yield install
    for h in handlers:
        root.removeHandler(h)
    ecst.setLevel(levels[0])
    kafka.setLevel(levels[1])
    root.setLevel(levels[2])


def test_a_json_line_has_ts_level_logger_message_and_the_fields(logs):
    out = logs("INFO", "json")
    logging.getLogger("ecst.test").info("applied %d records", 3, extra={"records": 3, "ops": {"c": 3}})
    doc = json.loads(out.getvalue())
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]
    assert {k: doc[k] for k in ("level", "logger", "message", "records", "ops")} == {
        "level": "INFO", "logger": "ecst.test", "message": "applied 3 records", "records": 3, "ops": {"c": 3}}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_reaches_a_log_line_in_either_format(logs, fmt):
    Secret("log-s3cret-value")
    out = logs("INFO", fmt)
    log = logging.getLogger("ecst.test")
    log.warning("connecting to postgresql://svc:pw-in-url-1@db/app with %s", "log-s3cret-value",
                extra={"url": "postgresql://svc:pw-in-url-1@db/app", "token": "log-s3cret-value"})
    try:
        raise RuntimeError("rejected log-s3cret-value")
    except RuntimeError:
        log.exception("boom")
    text = out.getvalue()
    assert "log-s3cret-value" not in text and "pw-in-url-1" not in text
    assert "postgresql://svc:***@db/app" in text
    if fmt == "json":
        first, second = (json.loads(line) for line in text.splitlines() if line.startswith("{"))
        assert first["token"] == "***" and first["url"] == "postgresql://svc:***@db/app"
        assert "RuntimeError: rejected ***" in second["exc"]


def test_the_level_filters_ecst_lines(logs):
    out = logs("WARNING", "text")
    logging.getLogger("ecst.test").info("hidden")
    logging.getLogger("ecst.test").warning("shown")
    assert "hidden" not in out.getvalue() and "WARNING ecst.test: shown" in out.getvalue()


def test_the_consumer_logs_at_info_by_default_and_the_settings_win():
    ecst = logging.getLogger("ecst")
    before = ecst.level
    try:
        configure_logging(Settings.from_env({}), "consume")
        assert ecst.level == logging.INFO
        configure_logging(Settings.from_env({}), "status")
        assert ecst.level == logging.WARNING
        configure_logging(Settings.from_env({"ECST_LOG_LEVEL": "debug"}), "status")
        assert ecst.level == logging.DEBUG
        configure_logging(Settings.from_env({"ECST_LOG_LEVEL": "debug"}, log_level="ERROR"), "consume")
        assert ecst.level == logging.ERROR
    finally:
        ecst.setLevel(before)
        configure_logging(Settings.from_env({}), "status")


@pytest.mark.parametrize("env, line", [
    ({"ECST_LOG_LEVEL": "loud"}, "ECST_LOG_LEVEL='loud': not a log level: use one of DEBUG, INFO, WARNING, "
     "ERROR"),
    ({"ECST_LOG_FORMAT": "xml"}, "ECST_LOG_FORMAT='xml': not a log format: use text or json (one JSON "
     "object a line)"),
])
def test_a_bad_variable_is_one_line_naming_it(env, line):
    with pytest.raises(ConfigError, match=f"^{line.replace('(', '[(]').replace(')', '[)]')}$"):
        Settings.from_env(env)
    result = CliRunner().invoke(cli, ["stack", "status"], env=env)
    assert result.exit_code == 1 and result.output.splitlines() == [f"Error: {line}"]


def test_the_options_set_level_and_format():
    s = Settings.from_env({"ECST_LOG_FORMAT": "JSON", "ECST_LOG_LEVEL": "Info"})
    assert (s.log_format, s.log_level) == ("json", "INFO")
    result = CliRunner().invoke(cli, ["--log-format", "yaml", "status", "--help"])
    assert result.exit_code == 2 and "'yaml' is not one of 'text', 'json'" in result.output


def test_each_applied_batch_is_one_info_line_with_its_counts_offsets_and_time(caplog):
    stats = ApplyStats(Counter({("c", "users"): 5, ("u", "users"): 3, ("d", "users"): 2}), stale=1)
    with caplog.at_level(logging.INFO, logger="ecst.consumer.runner"):
        log_batch([None] * 11, stats, {("p.public.users", 1): 40, ("p.public.users", 0): 12}, 1, 0, 0.0123)
    [record] = caplog.records
    assert record.levelname == "INFO"
    assert record.getMessage() == (
        "applied batch: 11 records, 8 upserts, 2 deletes, 1 stale, 1 ignored, 0 dead-lettered; next offsets "
        "p.public.users[0]=12 p.public.users[1]=40; 12 ms")
    assert (record.records, record.upserts, record.deletes, record.stale, record.ms) == (11, 8, 2, 1, 12.3)
    assert record.offsets == {"p.public.users[0]": 12, "p.public.users[1]": 40}


def test_the_options_also_work_after_consume(tmp_path):
    ecst = logging.getLogger("ecst")
    before = ecst.level
    try:
        args = ["consume", "--log-level", "error", "--log-format", "json",
                "--state-url", f"sqlite:///{tmp_path / 's.db'}", "--batch-size", "0"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and result.output.startswith("Error: --batch-size: 0")
        assert ecst.level == logging.ERROR
        [handler] = [h for h in logging.getLogger().handlers if getattr(h, "_ecst", False)]
        assert type(handler.formatter).__name__ == "JsonFormatter"
    finally:
        ecst.setLevel(before)
        configure_logging(Settings.from_env({}), "status")

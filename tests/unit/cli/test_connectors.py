"""`ecst connectors …`: a producer database or Connect URL that cannot be used is one `Error:` line
naming it (never its password) and saying what to do."""

from pathlib import Path

from click.testing import CliRunner

from ecst.cli.main import cli
from ecst.exceptions import ConfigError, ProducerError

ROOT = Path(__file__).resolve().parents[3]
USERS = str(ROOT / "connectors" / "users.yaml")
PASSWORD = "s3cret-pw"
CLOSED_CONNECT = "http://127.0.0.1:1"  # nothing listens on port 1


def run(*args: str):
    result = CliRunner().invoke(cli, list(args), env={"ECST_PRODUCER_URL": None})
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    assert result.exit_code == 1 and "Traceback" not in result.output and PASSWORD not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0], result.exception.__context__  # the ecst error the CLI turned into that line


def test_doctor_against_an_unreachable_producer_database_is_a_producer_error():
    line, error = run("connectors", "doctor", "-f", USERS, "--connect-url", CLOSED_CONNECT,
                      "--producer-url", f"postgresql://u:{PASSWORD}@127.0.0.1:1/db")
    assert line.startswith("Error: cannot reach the producer database postgresql://u@127.0.0.1:1/db (")
    assert line.endswith("check that it is running and reachable from here, or fix --producer-url "
                         "(or ECST_PRODUCER_URL)")
    assert isinstance(error, ProducerError)  # as in `ecst verify`


def test_doctor_without_a_producer_database_is_a_producer_error(tmp_path):
    line, error = run("--home", str(tmp_path), "connectors", "doctor", "-f", USERS, "--connect-url",
                      CLOSED_CONNECT)
    assert line == "Error: doctor needs the producer database: pass --producer-url or set ECST_PRODUCER_URL"
    assert isinstance(error, ProducerError)


def test_a_connect_url_without_a_scheme_is_one_line():
    line, error = run("connectors", "list", "--connect-url", "localhost:8083")
    assert line.startswith("Error: Kafka Connect URL 'localhost:8083' is not an http(s) URL: use http://")
    assert isinstance(error, ConfigError)


class _Connect:
    """Connect holding the users connector as applied with another slot name."""

    def __init__(self):
        from ecst.connectors.definition import load_definitions

        self.config = {**load_definitions([USERS], environ={})[0].config, "slot.name": "old_slot"}

    errors: dict = {}  # what Connect's validation says of the new config

    def get_config(self, name):
        return dict(self.config)

    def validate(self, connector_class, config):
        return self.errors


def _with_connect(monkeypatch, errors=None):
    import ecst.cli.options

    connect = _Connect()
    connect.errors = errors or {}
    monkeypatch.setattr(ecst.cli.options, "ConnectClient", lambda url, auth=None: connect)
    from ecst.connectors.apply import UPDATED, Change

    applied = []

    def apply(client, definition, **options):
        applied.append(definition.name)
        return Change(definition.name, UPDATED)

    monkeypatch.setattr("ecst.connectors.apply.apply", apply)
    return applied


def test_apply_refuses_a_destructive_change_it_cannot_ask_about(monkeypatch):
    applied = _with_connect(monkeypatch)
    result = CliRunner().invoke(cli, ["connectors", "apply", "-f", USERS, "--skip-key-check"],
                                env={"ECST_PRODUCER_URL": None})
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.splitlines()[-1]  # after the --skip-key-check warning
    assert line.startswith("Error: connector users: changing slot.name is destructive")
    assert line.endswith("nothing was changed: confirm, or pass --yes")
    assert applied == []


def test_apply_with_yes_makes_the_destructive_change(monkeypatch):
    applied = _with_connect(monkeypatch)
    result = CliRunner().invoke(cli, ["connectors", "apply", "-f", USERS, "--skip-key-check", "--yes"],
                                env={"ECST_PRODUCER_URL": None})
    assert result.exit_code == 0, result.output
    assert applied == ["users"] and "connector/users updated" in result.output


def test_plan_marks_the_destructive_key_and_says_why(monkeypatch):
    _with_connect(monkeypatch)
    result = CliRunner().invoke(cli, ["connectors", "plan", "-f", USERS, "--skip-key-check"],
                                env={"ECST_PRODUCER_URL": None})
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    at = lines.index("  ~ slot.name: old_slot -> ecst_users")
    assert lines[at + 1].startswith("    destructive: a new replication slot is created")


def test_an_invalid_destructive_change_is_reported_as_invalid(monkeypatch):
    applied = _with_connect(monkeypatch, errors={"slot.name": ["bad name"]})
    result = CliRunner().invoke(cli, ["connectors", "apply", "-f", USERS, "--skip-key-check"],
                                env={"ECST_PRODUCER_URL": None})
    assert result.exit_code == 1 and applied == []
    assert "is invalid; nothing was changed" in result.output and "slot.name: bad name" in result.output
    assert "destructive" not in result.output

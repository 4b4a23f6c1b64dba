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

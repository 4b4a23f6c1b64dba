"""`ecst status` and `ecst verify`: a database that cannot be reached or used is one `Error:` line
naming it (never its password) and saying what to do, never a traceback."""

from click.testing import CliRunner

from ecst.cli.main import cli
from ecst.exceptions import ProducerError, StateStoreError, StateStoreUnavailableError

PASSWORD = "s3cret-pw"
CLOSED = f"postgresql://u:{PASSWORD}@127.0.0.1:1/db"  # nothing listens on port 1


def run(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(cli, list(args), env={"ECST_PRODUCER_URL": None, **(env or {})})
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    return result


def one_error_line(result) -> str:
    """The single line the command printed, checked to be an `Error:` line without a password."""
    assert result.exit_code == 1
    assert "Traceback" not in result.output and PASSWORD not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    return lines[0]


def raised(result) -> BaseException | None:
    """The ecst error the CLI turned into `Error: …` (the context of its SystemExit)."""
    return result.exception.__context__


def test_status_of_an_unreachable_state_database():
    result = run("status", "--state-url", CLOSED)
    line = one_error_line(result)
    assert "postgresql+psycopg://u:***@127.0.0.1:1/db" in line and "Connection refused" in line
    assert line.endswith("check that it is running and reachable from here, or fix --state-url (state.url "
                         "in the consumer YAML, or ECST_STATE_URL)")
    assert isinstance(raised(result), StateStoreUnavailableError)


def test_status_of_a_state_file_without_ecst_state_names_it(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    line = one_error_line(run("status", "--state-url", url))
    assert line == f"Error: {url} holds no ecst state (no ecst_offsets table): has a consumer run against it?"


def test_status_of_a_state_file_whose_folder_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("")
    url = f"sqlite:///{tmp_path / 'file' / 'state' / 's.db'}"
    result = run("status", "--state-url", url)
    line = one_error_line(result)
    folder = tmp_path / "file" / "state"
    assert line.startswith(f"Error: state URL {url}: cannot create the folder {folder} (")
    assert "--state-url" in line and isinstance(raised(result), StateStoreError)


def test_verify_against_an_unreachable_producer_database(tmp_path):
    result = run("verify", "--state-url", f"sqlite:///{tmp_path / 's.db'}", "--topic", "p.public.users",
                 "--producer-url", CLOSED)
    line = one_error_line(result)
    assert line.startswith("Error: cannot reach the producer database postgresql://u@127.0.0.1:1/db (")
    assert "Connection refused" in line
    assert line.endswith("check that it is running and reachable from here, or fix --producer-url "
                         "(or ECST_PRODUCER_URL)")
    assert isinstance(raised(result), ProducerError)


def test_verify_against_an_unreachable_state_database():
    result = run("verify", "--state-url", CLOSED, "--topic", "p.public.users", "--producer-url", CLOSED)
    line = one_error_line(result)
    assert "postgresql+psycopg://u:***@127.0.0.1:1/db" in line and "fix --state-url" in line
    assert isinstance(raised(result), StateStoreUnavailableError)


def test_verify_with_a_malformed_producer_url_says_how_to_write_one(tmp_path):
    result = run("verify", "--state-url", f"sqlite:///{tmp_path / 's.db'}", "--topic", "p.public.users",
                 "--producer-url", f"host=127.0.0.1 password={PASSWORD} oops")
    line = one_error_line(result)
    assert line.startswith("Error: cannot use the producer database ")
    assert line.endswith("use postgresql://USER@HOST:PORT/DATABASE in --producer-url (or ECST_PRODUCER_URL)")
    assert isinstance(raised(result), ProducerError)


def test_verify_without_a_producer_database_is_a_producer_error(tmp_path):
    result = run("--home", str(tmp_path / "no-stack"), "verify", "--state-url",
                 f"sqlite:///{tmp_path / 's.db'}", "--topic", "p.public.users")
    assert one_error_line(result) == ("Error: verify needs the producer database: pass --producer-url or set "
                                      "ECST_PRODUCER_URL")
    assert isinstance(raised(result), ProducerError)

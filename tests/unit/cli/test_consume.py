"""`ecst consume`: why a topic yielded nothing, and bad input refused before anything happens."""

import socket

import pytest

from ecst.cli.consume import why_nothing
from ecst.consumer.runner import RunStats


def test_a_line_for_each_topic_that_yielded_nothing_saying_why():
    stats = RunStats(by_topic={"p.public.users": 12}, empty_at_start={"p.public.history"})
    lines = why_nothing(["p.public.users", "p.public.history", "p.public.orders"], stats)
    assert len(lines) == 2
    assert lines[0].startswith("Warning: topic p.public.history holds no records, so nothing was applied")
    assert "`ecst connectors status <connector>`" in lines[0] and "FAILED" in lines[0]
    assert lines[1] == "topic p.public.orders: no new records after the offsets stored in the state"


def test_a_run_stopped_while_waiting_for_a_topic_says_so():
    stats = RunStats(missing=["p.public.orders"])
    assert why_nothing(["p.public.orders"], stats) == [
        "topic p.public.orders does not exist: stopped while waiting for it (is its connector applied and "
        "running? `ecst connectors status`)"]


# -- bad input: one `Error:` line naming the option or key, a non-zero exit, nothing written ---------

def consume(tmp_path, *args):
    """`ecst consume` with a state file under tmp_path and an unreachable Kafka (every check must
    come before Kafka is contacted, and before the state is opened)."""
    from click.testing import CliRunner

    from ecst.cli.main import cli

    result = CliRunner().invoke(cli, ["consume", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t",
                                      "--state-url", f"sqlite:///{tmp_path / 'state' / 's.db'}", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def config_file(tmp_path, text):
    path = tmp_path / "consumer.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("args, line", [
    (["--batch-size", "0"], "Error: --batch-size: 0 is not a batch size: use a whole number of records "
     "from 1 to 100000 (each batch is held in memory and applied in one transaction)"),
    (["--batch-size", "100000000000000"], "Error: --batch-size: 100000000000000 is not a batch size: use a "
     "whole number of records from 1 to 100000 (each batch is held in memory and applied in one "
     "transaction)"),
    (["--http-port", "999999"], "Error: --http-port: 999999 is not a TCP port: use a number from 1 to 65535"),
    (["--http-port", "0"], "Error: --http-port: 0 is not a TCP port: use a number from 1 to 65535"),
    (["--http-host", "http://0.0.0.0"], "Error: --http-host: 'http://0.0.0.0' is not an address to bind: "
     "use a host name or an IP address (127.0.0.1: this machine only; 0.0.0.0: every interface, as in a "
     "container)"),
    (["--group-instance-id", "my host"], "Error: --group-instance-id: 'my host' is not a group instance "
     "id: use up to 249 letters, digits, '.', '_' or '-', unique to each consumer process of the group "
     "(\"\" for a dynamic member)"),
])
def test_a_bad_option_is_one_line_naming_it_and_nothing_is_written(tmp_path, args, line):
    result = consume(tmp_path, *args)
    assert result.exit_code == 1
    assert result.output.splitlines() == [line]
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("text, line", [
    ("http: {port: 999999}\n", "http.port: 999999 is not a TCP port: use a number from 1 to 65535"),
    ("batch_size: 100000000000000\n", "batch_size: 100000000000000 is not a batch size: use a whole "
     "number of records from 1 to 100000 (each batch is held in memory and applied in one transaction)"),
    ("batch_size: 0\n", "batch_size: 0 is not a batch size"),
    ("tombstone_retention_hours: -1\n", "tombstone_retention_hours: -1 is not a retention: use a number "
     "of hours >= 0"),
    ("tombstone_retention_hours: .inf\n", "tombstone_retention_hours: inf is not a retention"),
])
def test_a_bad_key_is_one_line_naming_file_and_key_and_nothing_is_written(tmp_path, text, line):
    path = config_file(tmp_path, text)
    result = consume(tmp_path, "-c", path)
    assert result.exit_code == 1
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith(f"Error: {path}: {line}")
    assert not (tmp_path / "state").exists()


def test_an_http_port_in_use_is_one_line_naming_it_and_nothing_is_written(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = consume(tmp_path, "--http-port", str(port))
        from_file = consume(tmp_path, "-c", config_file(tmp_path, f"http: {{port: {port}}}\n"))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: --http-port {port}: 127.0.0.1:{port} is already in use by another process: choose "
        "another port, or stop that process"]
    assert from_file.exit_code == 1
    assert from_file.output.startswith(f"Error: {tmp_path / 'consumer.yaml'}: http.port {port}: ")
    assert not (tmp_path / "state").exists()


def test_the_http_host_comes_from_the_option_or_ecst_http_host_over_the_file(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = config_file(tmp_path, f"http: {{host: 127.0.0.1, port: {port}}}\n")
        option = consume(tmp_path, "-c", path, "--http-host", "0.0.0.0")
        monkeypatch.setenv("ECST_HTTP_HOST", "0.0.0.0")
        env = consume(tmp_path, "-c", path)
    for result in (option, env):
        assert result.exit_code == 1
        assert result.output.splitlines() == [
            f"Error: {path}: http.port {port}: 0.0.0.0:{port} is already in use by another process: choose "
            "another port, or stop that process"]


@pytest.mark.parametrize("url, line", [
    ("mysql://app:s3cret@localhost/users", "Error: state URL mysql://app:***@localhost/users: ecst keeps its "
     "state in SQLite or PostgreSQL, not mysql: use sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE "
     "(--state-url, state.url in the consumer YAML, or ECST_STATE_URL)"),
    ("postgresql+asyncpg://app:s3cret@localhost/users", "Error: state URL postgresql+asyncpg://app:***@"
     "localhost/users: its driver 'asyncpg' is not installed (No module named 'asyncpg'): use "
     "postgresql:// (psycopg 3, installed with ecst) or sqlite:///PATH"),
])
def test_a_state_url_ecst_cannot_use_is_one_line_without_the_password(tmp_path, url, line):
    result = consume(tmp_path, "--state-url", url)
    assert result.exit_code == 1
    assert result.output.splitlines() == [line]


def test_a_state_file_whose_folder_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    url = f"sqlite:///{tmp_path / 'file' / 'state' / 's.db'}"
    result = consume(tmp_path, "--state-url", url)
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    folder = tmp_path / "file" / "state"
    assert line.startswith(f"Error: state URL {url}: cannot create the folder {folder} (")
    assert line.endswith("fix --state-url (state.url in the consumer YAML, or ECST_STATE_URL)")

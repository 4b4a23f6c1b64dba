"""The CLI's contract: help everywhere, one-line errors, non-zero exits, nothing changed."""

import re
import socket
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ecst.cli.main import cli, main  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


def all_commands(group=cli, prefix=("ecst",)):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, path)
        else:
            yield " ".join(path), cmd


DOCS = ROOT / "docs"


def command_reference() -> dict[str, str]:
    """The commands docs/cli.md lists (the first cell of each table row, `ecst …`), each with the
    cell that says which pages document it."""
    rows = re.findall(r"^\| `(ecst [^`]*)` \|.*\| ([^|]*) \|$", (DOCS / "cli.md").read_text(), re.M)
    return dict(rows)


def page_text(name: str) -> str:
    """A docs page as the site shows it: `--8<-- "FILE:SECTION"` lines replaced by that section."""
    def snippet(m: re.Match) -> str:
        source = (ROOT / m[1]).read_text()
        return source[source.index(f"[start:{m[2]}]"):source.index(f"[end:{m[2]}]")]

    return re.sub(r'^--8<-- "([^":]+):([^"]+)"$', snippet, (DOCS / name).read_text(), flags=re.M)


@pytest.mark.parametrize("path, cmd", list(all_commands()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_has_help_with_an_example_and_is_in_the_command_reference(path, cmd):
    assert cmd.help and "Example:" in cmd.help, f"{path} needs help text with an Example: block"
    reference = command_reference()
    assert path in reference, f"{path} is not in docs/cli.md's command reference"
    pages = re.findall(r"\]\(([^)#]+\.md)", reference[path])
    assert pages, f"docs/cli.md names no page that documents {path}"
    assert any(path in page_text(p) for p in pages), f"{path} is not documented in {', '.join(pages)}"


def test_the_command_reference_lists_only_commands_that_exist():
    stale = set(command_reference()) - {path for path, _ in all_commands()}
    assert not stale, f"docs/cli.md lists commands that do not exist: {sorted(stale)}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_yaml_syntax_error_exits_1_naming_file_and_line(tmp_path):
    bad = tmp_path / "users.yaml"
    bad.write_text("name: users\nconfig:\n  connector.class: X\n  oops: [\n")
    result = run("connectors", "apply", "-f", str(bad), "--connect-url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad}: YAML syntax error at line ")


def test_unknown_top_level_key_exits_1(tmp_path):
    bad = tmp_path / "users.yaml"
    bad.write_text("name: users\nconfig: {connector.class: X}\nreplicas: 3\n")
    result = run("connectors", "apply", "-f", str(bad), "--connect-url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1 and "unknown top-level key 'replicas'" in result.output


def test_unreachable_connect_url_is_one_clear_line():
    url = f"http://127.0.0.1:{free_port()}"
    result = run("connectors", "apply", "-f", str(ROOT / "connectors" / "users.yaml"), "--connect-url", url)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: Couldn't connect to Kafka Connect at {url}: is it running? "
        "(`ecst stack status`, or pass --connect-url)")


def stack_env(tmp_path, **extra):
    env = {"ECST_PG_PORT": str(free_port()), "ECST_KAFKA_PORT": str(free_port()),
           "ECST_CONTROLLER_PORT": str(free_port()), "ECST_CONNECT_PORT": str(free_port())}
    env.update(extra)
    return env


def test_stack_up_with_a_port_in_use_says_which_and_what_to_do(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--home", str(tmp_path / "home"), "stack", "up",
                     env=stack_env(tmp_path, ECST_CONNECT_PORT=str(port)))
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: port {port} (Kafka Connect REST) is already in use by another process: "
        f"stop that process or choose another port with ECST_CONNECT_PORT=<port>")
    assert not (tmp_path / "home" / "jars").exists()  # failed before doing anything


def test_stack_up_without_java_says_how_to_install_it(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run("--home", str(tmp_path / "home"), "stack", "up", env=stack_env(tmp_path, PATH=str(empty)))
    assert result.exit_code == 1
    assert result.output.startswith("Error: Java not found: install a JDK 17")

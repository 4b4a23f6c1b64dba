"""`ecst.cli.main`: the root group holds every command as soon as it is imported, with no import loop,
and the console script and `python -m ecst` both run it."""

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ecst.cli.main import cli

TOP_LEVEL = ["connectors", "consume", "demo", "rebootstrap", "stack", "status", "verify"]
COMMAND_MODULES = ["connectors", "consume", "demo", "errors", "options", "rebootstrap", "stack", "state"]


def python(code: str) -> subprocess.CompletedProcess:
    """`code` run in a fresh interpreter: nothing imported before it."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_importing_the_root_group_alone_gives_every_command():
    done = python("from ecst.cli.main import cli; print(' '.join(sorted(cli.commands)))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == TOP_LEVEL


def test_no_command_module_imports_the_root():
    modules = ", ".join(f"ecst.cli.{m}" for m in COMMAND_MODULES)
    done = python(f"import sys, {modules}; print('ecst.cli.main' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def paths(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from paths(cmd, (*prefix, name))


@pytest.mark.parametrize("path", list(paths()), ids=" ".join)
def test_every_command_and_group_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0 and f"Usage: cli {' '.join(path)}" in result.output


def test_nested_commands_are_reached_through_the_group():
    found = set(paths())
    assert {("status",), ("verify",), ("stack", "status"), ("rebootstrap", "incremental"),
            ("connectors", "offsets", "reset"), ("connectors", "pause")} <= found


@pytest.mark.parametrize("argv", [[str(Path(sys.executable).parent / "ecst")],
                                  [sys.executable, "-m", "ecst"]], ids=["console script", "python -m ecst"])
def test_the_entry_points_run_the_full_group(argv):
    done = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: ecst [OPTIONS] COMMAND [ARGS]...")
    listed = done.stdout.split("Commands:")[1].split()
    assert all(name in listed for name in TOP_LEVEL)

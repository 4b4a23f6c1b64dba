"""consumer/Dockerfile cannot be built here (no Docker engine): check what can be checked offline.
The base and every dependency are pinned, the image runs as a non-root user, its default command
runs the consumer from the mounted consumer/users.yaml, and its port, health check and state folder
agree with that config."""

import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import requires
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ecst.cli.main import cli
from ecst.consumer.config import load_consumer_config
from ecst.consumer.http import StatusServer
from ecst.consumer.metrics import Metrics
from tests.unit.dockerfile import Instruction, dockerignore, ignored, parse, stages

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "consumer" / "Dockerfile"
STAGES = stages(parse(DOCKERFILE))
FINAL = STAGES[-1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "consumer" / "requirements.lock"
BUILD_LOCK = ROOT / "consumer" / "build.lock"
USERS_YAML = ROOT / "consumer" / "users.yaml"


def one(keyword: str, stage: list[Instruction] = FINAL) -> Instruction:
    [found] = [i for i in stage if i.keyword == keyword]
    return found


def image_env() -> dict[str, str]:
    env = {}
    for i in FINAL:
        if i.keyword == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(i.args))
    return env


def healthcheck_url() -> str:
    [url] = re.findall(r"https?://[^'\"\s]+", " ".join(one("HEALTHCHECK").exec_form()))
    return url


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{name: (version, hashes)} of a pip-compile --generate-hashes file; every requirement must be
    `name==version` with at least one hash."""
    out: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text()
    for block in re.split(r"\n(?=\S)", text):
        first = block.split("\n", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*) \\", first)
        assert match, f"{path.name}: not an exact pin: {first!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        assert hashes, f"{path.name}: {first} has no hash"
        out[canonicalize_name(match[1])] = (match[2], hashes)
    return out


# -- the base image --------------------------------------------------------------------------

def test_the_image_is_built_in_two_stages_from_one_exactly_pinned_python():
    bases = [s[0].args.split()[0] for s in STAGES]
    assert len(STAGES) >= 2 and len(set(bases)) == 1, bases
    # an exact Python release on a named Debian release: never `latest`, `3`, `3.11` or `slim`
    match = re.fullmatch(r"python:(3)\.(\d+)\.(\d+)-slim-(bookworm|trixie)", bases[0])
    assert match, bases[0]
    # the Python that CI tests with, and that pyproject allows
    minor = f"{match[1]}.{match[2]}"
    assert minor == PYPROJECT["tool"]["mypy"]["python_version"] == "{}.{}".format(*sys.version_info)
    assert PYPROJECT["project"]["requires-python"] == f">={minor}"
    # the final stage copies only the built environment out of the build stage
    build_name = STAGES[0][0].args.split()[-1]
    copies = [i for i in FINAL if i.keyword == "COPY"]
    assert [c.flags().get("from") for c in copies] == [build_name]


# -- dependencies ----------------------------------------------------------------------------

def test_every_locked_requirement_is_an_exact_pin_with_hashes():
    pins = locked(LOCK)
    assert len(pins) >= len(PYPROJECT["project"]["dependencies"])
    assert "-r" not in LOCK.read_text().replace("# via -r", "")  # no unpinned includes
    [build] = locked(BUILD_LOCK).items()
    assert build[0] == "setuptools"


def test_the_lock_pins_every_runtime_dependency_of_pyproject_within_its_range():
    pins = locked(LOCK)
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency in pyproject.toml but not in {LOCK.name}"
        assert req.specifier.contains(pins[name][0], prereleases=True), (spec, pins[name][0])
        # an extra's own requirements (psycopg[binary] -> psycopg-binary) are pinned too
        for extra in req.extras:
            for dep in map(Requirement, requires(req.name) or []):
                if dep.marker and dep.marker.evaluate({"extra": extra}) and "extra" in str(dep.marker):
                    assert canonicalize_name(dep.name) in pins, (spec, dep.name)


def test_the_lock_was_compiled_from_pyproject():
    """Its header holds the command that regenerates it (the Dockerfile's comment points there)."""
    assert re.search(r"^#\s+pip-compile .*--generate-hashes .*pyproject\.toml$", LOCK.read_text(), re.M)


def test_the_wheel_backend_is_pinned_to_a_version_the_build_system_accepts():
    version = locked(BUILD_LOCK)["setuptools"][0]
    [backend] = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    assert canonicalize_name(backend.name) == "setuptools" and backend.specifier.contains(version)


def test_the_build_installs_only_hashed_binary_wheels_then_ecst_itself():
    runs = " && ".join(i.args for i in STAGES[0] if i.keyword == "RUN")
    for lock in ("consumer/requirements.lock", "consumer/build.lock"):
        assert re.search(rf"install --require-hashes --only-binary=:all: --no-deps -r {lock}", runs), lock
    assert "--no-build-isolation" in runs and "pip check" in runs  # the pinned backend; the lock is whole
    copied = {w for i in STAGES[0] if i.keyword == "COPY" for w in i.args.split()[:-1]}
    assert {"consumer/requirements.lock", "consumer/build.lock", "pyproject.toml", "ecst"} <= copied


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_private():
    patterns = dockerignore(ROOT / ".dockerignore")
    copied = {w for s in STAGES for i in s if i.keyword == "COPY" and "from" not in i.flags()
              for w in i.args.split()[:-1]}
    assert copied
    for path in copied:
        assert (ROOT / path).exists() and not ignored(path, patterns), path
    assert not ignored("ecst/consumer/runner.py", patterns)
    for private in (".venv/bin/python", ".ecst/postgres/data/PG_VERSION", ".git/config", "users-service.db",
                    "ecst/__pycache__/main.cpython-311.pyc", "consumer/users.yaml"):
        assert ignored(private, patterns), private


# -- the running image -----------------------------------------------------------------------

def test_the_image_runs_as_a_fixed_non_root_user():
    users = [i for s in STAGES for i in s if i.keyword == "USER"]
    assert users and users[-1] in FINAL
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) >= 1000, users[-1]  # numeric: Kubernetes' runAsNonRoot can check it
    assert not gid or (gid.isdigit() and int(gid) != 0)
    create = " ".join(i.args for i in FINAL if i.keyword == "RUN")
    assert f"--uid {uid}" in create


def test_the_state_folder_is_the_workdir_a_volume_and_owner_only():
    """The state holds users' rows: the folder (which a new named volume copies, mode included) is
    0700 and belongs to the image's user; a relative SQLite URL lands in it."""
    folder = one("WORKDIR").args
    assert yaml.safe_load(one("VOLUME").args) == [folder]
    uid = one("USER").args.split(":")[0]
    setup = " ".join(i.args for i in FINAL if i.keyword == "RUN")
    assert re.search(rf"chown {uid}(:\d+)? {folder}\b", setup), setup
    assert re.search(rf"chmod 0?700 {folder}\b", setup), setup
    default = load_consumer_config(USERS_YAML, environ={}).state_url.reveal()
    assert default.startswith("sqlite:///") and not default.startswith("sqlite:////")  # relative: the WORKDIR


def test_the_default_command_runs_the_consumer_from_the_mounted_config():
    assert one("ENTRYPOINT").exec_form() == ["ecst"]
    args = one("CMD").exec_form()
    # `ecst <args> --help` is consume's help: the group's options parse, and the command is consume
    shown = CliRunner().invoke(cli, [*args, "--help"], prog_name="ecst")
    assert shown.exit_code == 0 and shown.output.startswith("Usage: ecst consume"), shown.output
    consume = cli.commands["consume"]
    ctx = consume.make_context("consume", args[args.index("consume") + 1:])
    assert ctx.params["config_file"] == "/etc/ecst/users.yaml"


def test_the_port_exposed_and_health_checked_is_the_one_users_yaml_serves_on_all_interfaces():
    config = load_consumer_config(USERS_YAML, environ=image_env())
    assert config.http_host == "0.0.0.0"  # reachable from outside the container
    assert load_consumer_config(USERS_YAML, environ={}).http_host == "127.0.0.1"  # outside a container
    assert one("EXPOSE").args == str(config.http_port)
    assert healthcheck_url() == f"http://127.0.0.1:{config.http_port}/healthz"
    flags = one("HEALTHCHECK").flags()
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)


@pytest.mark.parametrize("healthy", [True, False])
def test_the_health_check_passes_exactly_when_healthz_answers_200(healthy):
    """The HEALTHCHECK's own command, pointed at a real status server."""
    server = StatusServer("127.0.0.1", 0, healthy=lambda: healthy, not_ready=lambda: None,
                          metrics=Metrics()).start()
    try:
        program, flag, code = one("HEALTHCHECK").exec_form()
        assert program == "python" and flag == "-c"
        code = code.replace(healthcheck_url(), f"http://127.0.0.1:{server.port}/healthz")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    finally:
        server.stop()
    assert (done.returncode == 0) == healthy, done.stderr

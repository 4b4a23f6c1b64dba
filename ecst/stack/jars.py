"""Resolves the broker, Connect and Debezium jars with Maven from `deploy/pom.xml`.

Resolution runs once per pom content: a stamp file holding the poms' hash makes the next
`stack up` reuse the jars without calling Maven. A plugin folder missing from the jars (a home
resolved by an older checkout, a folder removed by hand) also makes it resolve again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ecst.exceptions import StackError
from ecst.stack.private import open_private, private_dir

POMS = ("deploy/pom.xml", "deploy/maven/kafka/pom.xml", "deploy/maven/debezium/pom.xml",
        "deploy/maven/jdbc/pom.xml")
PLUGIN = "debezium-connector-postgres"
# Every plugin folder the poms fill: the Postgres source connector, and the JDBC sink connector
# that the benchmarks compare ecst with.
PLUGINS = (PLUGIN, "debezium-connector-jdbc")


def _pom_hash(project_dir: Path) -> str:
    h = hashlib.sha256()
    for rel in POMS:
        path = project_dir / rel
        if not path.exists():
            raise StackError(
                f"{path} is missing: run ecst from a checkout of the project "
                "or set ECST_PROJECT_DIR to one"
            )
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def resolved(jars_dir: Path, digest: str) -> bool:
    """Whether `jars_dir` holds what the poms of hash `digest` resolve: its stamp, the worker's
    jars and every plugin folder."""
    stamp = jars_dir / ".resolved"
    return (stamp.exists() and stamp.read_text().strip() == digest
            and all(any(folder.glob("*.jar")) for folder in
                    [jars_dir / "kafka", *(jars_dir / "plugins" / name for name in PLUGINS)]))


def ensure_jars(project_dir: Path, jars_dir: Path, log_file: Path) -> Path:
    """Make sure `jars_dir/kafka` and every `jars_dir/plugins/<connector>` are populated."""
    digest = _pom_hash(project_dir)
    if resolved(jars_dir, digest):
        return jars_dir
    stamp = jars_dir / ".resolved"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) not found: install it with `apt-get install maven`, then re-run")
    if jars_dir.exists():
        shutil.rmtree(jars_dir)
    jars_dir.mkdir(parents=True)
    private_dir(log_file.parent)
    with os.fdopen(open_private(log_file, os.O_WRONLY | os.O_TRUNC), "wb") as out:
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(project_dir / "deploy/pom.xml"), "package",
             f"-Decst.jars={jars_dir}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=project_dir,
        )
    if result.returncode != 0:
        raise StackError(
            f"Maven could not resolve the Kafka/Debezium jars (exit {result.returncode}, log: "
            f"{log_file}): check access to Maven Central (or your mirror in ~/.m2/settings.xml) "
            "and re-run"
        )
    stamp.write_text(digest + "\n")
    return jars_dir

"""Resolves the broker, Connect and Debezium jars with Maven from `deploy/pom.xml`.

Resolution runs once per pom content: a stamp file holding the poms' hash makes the next
`stack up` reuse the jars without calling Maven.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ecst.exceptions import StackError
from ecst.stack.private import open_private, private_dir

POMS = ("deploy/pom.xml", "deploy/maven/kafka/pom.xml", "deploy/maven/debezium/pom.xml")
PLUGIN = "debezium-connector-postgres"


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


def ensure_jars(project_dir: Path, jars_dir: Path, log_file: Path) -> Path:
    """Make sure `jars_dir/kafka` and `jars_dir/plugins/<connector>` are populated."""
    digest = _pom_hash(project_dir)
    stamp = jars_dir / ".resolved"
    if stamp.exists() and stamp.read_text().strip() == digest and any((jars_dir / "kafka").glob("*.jar")):
        return jars_dir
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

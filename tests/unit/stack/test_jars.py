"""The jars folder is resolved again when the poms change or a plugin folder is missing (a home
resolved by a checkout from before the JDBC sink plugin)."""

from pathlib import Path

from ecst.settings import Settings
from ecst.stack import jars


def _fill(jars_dir: Path, digest: str, plugins: tuple[str, ...]) -> None:
    (jars_dir / "kafka").mkdir(parents=True)
    (jars_dir / "kafka" / "kafka-clients.jar").write_text("")
    for name in plugins:
        (jars_dir / "plugins" / name).mkdir(parents=True)
        (jars_dir / "plugins" / name / "x.jar").write_text("")
    (jars_dir / ".resolved").write_text(digest + "\n")


def test_the_poms_name_the_jdbc_sink_plugin_and_hash_its_pom():
    root = Settings().project_dir
    assert "deploy/maven/jdbc/pom.xml" in jars.POMS
    assert "<module>maven/jdbc</module>" in (root / "deploy/pom.xml").read_text()
    pom = (root / "deploy/maven/jdbc/pom.xml").read_text()
    assert "plugins/debezium-connector-jdbc<" in pom and "debezium-connector-jdbc" in jars.PLUGINS


def test_jars_with_every_plugin_folder_and_the_stamp_are_reused(tmp_path):
    _fill(tmp_path, "abc", jars.PLUGINS)
    assert jars.resolved(tmp_path, "abc")
    assert not jars.resolved(tmp_path, "other")  # the poms changed


def test_a_missing_plugin_folder_makes_the_jars_resolve_again(tmp_path):
    _fill(tmp_path, "abc", ("debezium-connector-postgres",))  # resolved before the JDBC sink
    assert not jars.resolved(tmp_path, "abc")

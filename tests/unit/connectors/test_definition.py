from pathlib import Path

import pytest

from ecst.connectors.apply import diff_configs
from ecst.connectors.definition import interpolate, load_definition, load_definitions, parse_definition
from ecst.exceptions import DefinitionError

ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_repository_users_connector_is_valid_and_keeps_provider_references():
    d = load_definition(ROOT / "connectors" / "users.yaml", environ={})
    assert d.name == "users"
    assert d.config["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert d.config["database.password"] == "${env:ECST_CONNECTOR_PASSWORD}"
    assert d.config["topic.prefix"] == "producer"  # ${ECST_TOPIC_PREFIX:-producer}
    assert d.config["tasks.max"] == "1" and d.config["key.converter.schemas.enable"] == "true"
    assert d.config["plugin.name"] == "pgoutput" and d.config["snapshot.mode"] == "initial"
    assert int(d.config["heartbeat.interval.ms"]) > 0


def test_the_users_connector_compresses_with_a_codec_the_consumer_can_read():
    """Every client of ecst must decode the batches the worker compresses: kafka-python needs a
    package per codec (`lz4`, a dependency), librdkafka has them built in."""
    from kafka import codec

    d = load_definition(ROOT / "connectors" / "users.yaml", environ={})
    name = d.config["producer.override.compression.type"]
    assert name == "lz4"
    assert getattr(codec, f"has_{name}")(), f"kafka-python cannot decode {name}: is the {name} package in?"


def test_interpolation_from_environment_with_defaults():
    env = {"PGPASSWORD": "s3cret"}
    assert interpolate("${PGPASSWORD}", env, "x") == "s3cret"
    assert interpolate("a-${MISSING:-dflt}-b", env, "x") == "a-dflt-b"
    assert interpolate("${MISSING:-}", env, "x") == ""
    assert interpolate("${env:PGPASSWORD}", env, "x") == "${env:PGPASSWORD}"
    assert interpolate("${file:/etc/x.properties:pw}", env, "x") == "${file:/etc/x.properties:pw}"


def test_missing_variable_names_file_key_and_remedy(tmp_path):
    path = write(tmp_path, "name: c\nconfig:\n  connector.class: X\n  database.password: ${NOPE}\n")
    with pytest.raises(DefinitionError) as err:
        load_definition(path, environ={})
    assert str(path) in str(err.value)
    assert "config.database.password" in str(err.value) and "NOPE is not set" in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "name: c\nconfig:\n  connector.class: X\n  bad: [unclosed\n")
    with pytest.raises(DefinitionError, match=r"c\.yaml: YAML syntax error at line \d+"):
        load_definition(path, environ={})


def test_unknown_top_level_key_is_rejected(tmp_path):
    path = write(tmp_path, "name: c\nconfgi: {}\nconfig:\n  connector.class: X\n")
    with pytest.raises(DefinitionError, match="unknown top-level key 'confgi'"):
        load_definition(path, environ={})


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"config": {"connector.class": "X"}}, "'name' is required"),
        ({"name": "c"}, "'config' is required"),
        ({"name": "c", "config": {"tasks.max": 1}}, "config.connector.class is required"),
        ({"name": "c", "config": {"connector.class": "X", "a": {"nested": 1}}}, "config.a: expected"),
        ({"name": "c", "config": {"connector.class": "X", "a": None}}, "null"),
        ({"name": "c", "config": {"connector.class": "X", "name": "other"}}, "differs from name"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_invalid_definitions(doc, message):
    with pytest.raises(DefinitionError, match=message):
        parse_definition(doc, Path("x.yaml"), environ={})


def test_values_become_connect_strings():
    d = parse_definition({"name": "c", "config": {"connector.class": "X", "n": 3, "b": False,
                                                  "l": ["a", "b"]}}, environ={})
    assert d.config == {"connector.class": "X", "n": "3", "b": "false", "l": "a,b"}


def test_secrets_are_masked_by_name_or_by_list():
    d = parse_definition({"name": "c", "secrets": ["my.key"],
                          "config": {"connector.class": "X", "database.password": "pw",
                                     "sasl.jaas.token": "t", "my.key": "k", "plain": "p"}},
                         environ={})
    assert d.masked() == {"connector.class": "X", "database.password": "***",
                          "sasl.jaas.token": "***", "my.key": "***", "plain": "p"}


def test_folders_load_every_yaml_and_names_must_be_unique(tmp_path):
    write(tmp_path, "name: a\nconfig: {connector.class: X}\n", "a.yaml")
    write(tmp_path, "name: b\nconfig: {connector.class: X}\n", "b.yml")
    assert [d.name for d in load_definitions([tmp_path], environ={})] == ["a", "b"]
    write(tmp_path, "name: a\nconfig: {connector.class: Y}\n", "c.yaml")
    with pytest.raises(DefinitionError, match="also used by"):
        load_definitions([tmp_path], environ={})


def test_diff_ignores_the_name_connect_adds():
    current = {"name": "c", "a": "1", "b": "2"}
    assert diff_configs(current, {"a": "1", "b": "2"}) == {}
    assert diff_configs(current, {"a": "1", "b": "3", "c": "4"}) == {"b": ("2", "3"), "c": (None, "4")}


def test_environment_overlay_is_merged_over_the_base_and_null_removes_a_key(tmp_path):
    write(tmp_path, "name: users\nconfig: {connector.class: X, a: '1', b: '2', c: '3'}\n", "users.yaml")
    (tmp_path / "env").mkdir()
    write(tmp_path / "env", "users:\n  config: {a: '10', c: null, d: 4}\n", "prod.yaml")
    [d] = load_definitions([tmp_path], environ={}, env="prod")
    assert d.config == {"connector.class": "X", "a": "10", "b": "2", "d": "4"}
    [base] = load_definitions([tmp_path / "users.yaml"], environ={})
    assert base.config["a"] == "1"


def test_overlay_errors_name_the_file(tmp_path):
    write(tmp_path, "name: users\nconfig: {connector.class: X}\n", "users.yaml")
    with pytest.raises(DefinitionError, match=r"env/staging\.yaml: no overlay for environment 'staging'"):
        load_definitions([tmp_path], environ={}, env="staging")
    (tmp_path / "env").mkdir()
    write(tmp_path / "env", "orders:\n  config: {a: 1}\n", "prod.yaml")
    with pytest.raises(DefinitionError, match=r"prod\.yaml: no connector named 'orders'"):
        load_definitions([tmp_path], environ={}, env="prod")


def test_the_repository_prod_overlay_applies():
    [d] = load_definitions([ROOT / "connectors"], environ={}, env="prod")
    assert d.config["topic.creation.default.replication.factor"] == "3"


def test_provider_references_are_not_masked_but_literal_secrets_are():
    from ecst.connectors.definition import mask_config

    masked = mask_config({"database.password": "${env:PW}", "sasl.secret": "s3cr3t", "x": "y"})
    assert masked == {"database.password": "${env:PW}", "sasl.secret": "***", "x": "y"}


def test_debezium_postgres_required_keys_and_integer_keys_are_checked_locally():
    base = {"connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "h", "database.dbname": "d", "database.user": "u", "topic.prefix": "p"}
    parse_definition({"name": "c", "config": base}, Path("c.yaml"), environ={})
    for missing in ("database.hostname", "topic.prefix"):
        config = {k: v for k, v in base.items() if k != missing}
        expected = rf"c\.yaml: config\.{missing} is required by PostgresConnector"
        with pytest.raises(DefinitionError, match=expected):
            parse_definition({"name": "c", "config": config}, Path("c.yaml"), environ={})
    bad_port = {"name": "c", "config": {**base, "database.port": "five"}}
    with pytest.raises(DefinitionError, match=r"config\.database\.port must be an integer, got 'five'"):
        parse_definition(bad_port, Path("c.yaml"), environ={})
    # a worker-side reference is resolved later, by Connect
    parse_definition({"name": "c", "config": {**base, "database.port": "${env:PORT}"}}, environ={})

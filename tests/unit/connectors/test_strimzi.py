from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ecst.cli.main import cli
from ecst.connectors.definition import load_definitions, parse_definition
from ecst.connectors.strimzi import kafka_connector, render
from ecst.exceptions import DefinitionError

ROOT = Path(__file__).resolve().parents[3]
# The KafkaConnectorSpec fields of the Strimzi CRD (kafka.strimzi.io/v1beta2)
SPEC_FIELDS = {"class", "tasksMax", "autoRestart", "config", "pause", "state", "listOffsets", "alterOffsets"}


def test_rendered_yaml_parses_and_matches_the_crd_fields():
    defs = load_definitions([ROOT / "connectors"], environ={}, env="prod")
    [doc] = list(yaml.safe_load_all(render(defs, "ecst-connect", "cdc")))
    assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2" and doc["kind"] == "KafkaConnector"
    assert doc["metadata"] == {"name": "users", "namespace": "cdc",
                               "labels": {"strimzi.io/cluster": "ecst-connect"}}
    spec = doc["spec"]
    assert set(spec) <= SPEC_FIELDS and spec["state"] in ("running", "paused", "stopped")
    assert spec["class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert spec["tasksMax"] == 1 and isinstance(spec["tasksMax"], int)
    assert not {"connector.class", "tasks.max", "name"} & set(spec["config"])
    assert spec["config"]["database.password"] == "${env:ECST_CONNECTOR_PASSWORD}"
    assert spec["config"]["topic.creation.default.replication.factor"] == 3  # the prod overlay
    assert spec["config"]["key.converter.schemas.enable"] is True


def test_the_example_kafka_connect_provides_every_env_variable_the_connectors_use():
    import re

    connect = yaml.safe_load((ROOT / "deploy" / "strimzi" / "kafka-connect.yaml").read_text())
    provided = {e["name"] for e in connect["spec"]["externalConfiguration"]["env"]}
    [d] = load_definitions([ROOT / "connectors"], environ={})
    used = {v for value in d.config.values() for v in re.findall(r"\$\{env:(\w+)\}", value)}
    assert used <= provided
    assert connect["spec"]["config"]["config.providers.env.class"].endswith("EnvVarConfigProvider")
    [plugin] = connect["spec"]["build"]["plugins"]
    assert plugin["artifacts"][0]["version"] == "3.6.1.Final"


def test_names_kubernetes_rejects_are_refused_with_advice():
    d = parse_definition({"name": "Users_CDC", "config": {"connector.class": "X"}}, environ={})
    with pytest.raises(DefinitionError, match="not a valid Kubernetes resource name"):
        kafka_connector(d, "c")


def test_render_cli_prints_the_resources():
    result = CliRunner().invoke(cli, ["connectors", "render", "-f", str(ROOT / "connectors" / "users.yaml"),
                                      "--cluster", "prod-connect"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["metadata"]["labels"]["strimzi.io/cluster"] == "prod-connect"

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ecst.cli.main import cli
from ecst.connectors.definition import load_definitions, parse_definition
from ecst.connectors.strimzi import kafka_connector, render
from ecst.exceptions import ConfigError, DefinitionError
from tests.unit.connectors.crd_schema import errors, load_crd, served_schema

ROOT = Path(__file__).resolve().parents[3]
STRIMZI = ROOT / "deploy" / "strimzi"
CONNECTOR_CRD = load_crd("047-Crd-kafkaconnector.yaml")
CONNECT_CRD = load_crd("kafkaconnect-v1-derived.yaml")


def _connect() -> dict:
    return yaml.safe_load((STRIMZI / "kafka-connect.yaml").read_text())


def test_rendered_yaml_parses_and_is_v1_by_default():
    defs = load_definitions([ROOT / "connectors"], environ={}, env="prod")
    [doc] = list(yaml.safe_load_all(render(defs, "ecst-connect", "cdc")))
    assert doc["apiVersion"] == "kafka.strimzi.io/v1" and doc["kind"] == "KafkaConnector"
    assert doc["metadata"] == {"name": "users", "namespace": "cdc",
                               "labels": {"strimzi.io/cluster": "ecst-connect"}}
    spec = doc["spec"]
    assert spec["state"] == "running" and "pause" not in spec  # `pause` is v1beta2 only
    assert spec["class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert spec["tasksMax"] == 1 and isinstance(spec["tasksMax"], int)
    assert not {"connector.class", "tasks.max", "name"} & set(spec["config"])
    assert spec["config"]["database.password"] == "${env:ECST_CONNECTOR_PASSWORD}"
    assert spec["config"]["topic.creation.default.replication.factor"] == 3  # the prod overlay
    assert spec["config"]["key.converter.schemas.enable"] is True


@pytest.mark.parametrize("version", ["v1", "v1beta2"])
@pytest.mark.parametrize("env", [None, "prod"])
def test_every_rendered_connector_fits_the_strimzi_crd_of_its_version(version, env):
    defs = load_definitions([ROOT / "connectors"], environ={}, env=env)
    docs = list(yaml.safe_load_all(render(defs, "ecst-connect", "cdc", version)))
    assert len(docs) == len(defs) >= 1
    for doc in docs:
        assert doc["apiVersion"] == f"kafka.strimzi.io/{version}"
        assert errors(doc, CONNECTOR_CRD) == []


def test_the_crd_check_catches_a_wrong_field():
    [d] = load_definitions([ROOT / "connectors"], environ={})
    good = kafka_connector(d, "c")
    bad = {**good, "spec": {**good["spec"], "pause": True}}  # v1beta2's field, gone in v1
    assert any("pause" in e for e in errors(bad, CONNECTOR_CRD))
    bad["apiVersion"] = "kafka.strimzi.io/v1beta2"
    assert errors(bad, CONNECTOR_CRD) == []
    for spec, word in [({"tasksMax": 0}, "tasksMax"), ({"state": "halted"}, "state"),
                       ({"tasksMax": "1"}, "tasksMax")]:
        assert any(word in e for e in errors({**good, "spec": {**good["spec"], **spec}}, CONNECTOR_CRD))
    assert errors({**good, "apiVersion": "kafka.strimzi.io/v1alpha1"}, CONNECTOR_CRD)


def test_the_vendored_crd_serves_v1_and_stores_it():
    versions = {v["name"]: v for v in CONNECTOR_CRD["spec"]["versions"]}
    assert versions["v1"]["served"] and versions["v1"]["storage"]
    assert "pause" not in served_schema(CONNECTOR_CRD, "v1")["properties"]["spec"]["properties"]


def test_api_version_v1beta2_and_a_bad_value():
    d = parse_definition({"name": "users", "config": {"connector.class": "X"}}, environ={})
    assert kafka_connector(d, "c", version="v1beta2")["apiVersion"] == "kafka.strimzi.io/v1beta2"
    with pytest.raises(ConfigError, match="use v1 or v1beta2"):
        kafka_connector(d, "c", version="v2")


def test_render_cli_api_version_flag():
    users = str(ROOT / "connectors" / "users.yaml")
    result = CliRunner().invoke(cli, ["connectors", "render", "-f", users, "--api-version", "v1beta2"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["apiVersion"] == "kafka.strimzi.io/v1beta2"
    result = CliRunner().invoke(cli, ["connectors", "render", "-f", users, "--api-version", "v1beta1"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --api-version 'v1beta1': ")


def test_the_example_kafka_connect_fits_the_v1_schema():
    assert errors(_connect(), CONNECT_CRD) == []


@pytest.mark.parametrize("change, word", [
    (lambda s: s.update(externalConfiguration={"env": []}), "externalConfiguration"),  # v1beta2 only
    (lambda s: s.pop("replicas"), "replicas"),  # required in v1
    (lambda s: s.pop("groupId"), "groupId"),
    (lambda s: s["build"]["output"].update(additionalKanikoOptions=[]), "additionalKanikoOptions"),
    (lambda s: s["metricsConfig"].update(type="prometheus"), "prometheus"),
    (lambda s: s["template"]["connectContainer"]["env"][0].update(value="x"), "env.0"),  # value and valueFrom
])
def test_the_kafka_connect_schema_check_catches_v1_mistakes(change, word):
    connect = _connect()
    change(connect["spec"])
    assert any(word in e for e in errors(connect, CONNECT_CRD))


def test_the_example_kafka_connect_provides_every_env_variable_the_connectors_use():
    connect = _connect()
    provided = {e["name"] for e in connect["spec"]["template"]["connectContainer"]["env"]}
    [d] = load_definitions([ROOT / "connectors"], environ={})
    used = {v for value in d.config.values() for v in re.findall(r"\$\{env:(\w+)\}", value)}
    assert used <= provided
    secrets = [e for e in connect["spec"]["template"]["connectContainer"]["env"] if "PASSWORD" in e["name"]]
    assert secrets and all("secretKeyRef" in e["valueFrom"] for e in secrets)
    assert connect["spec"]["config"]["config.providers.env.class"].endswith("EnvVarConfigProvider")
    assert not {"group.id", "config.storage.topic"} & set(connect["spec"]["config"])  # spec fields in v1
    [plugin] = connect["spec"]["build"]["plugins"]
    pom = ET.parse(ROOT / "deploy" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    assert plugin["artifacts"][0]["version"] == pom.findtext("m:properties/m:debezium.version", namespaces=ns)


def test_the_kafka_connect_version_is_the_kafka_the_project_pins():
    pom = ET.parse(ROOT / "deploy" / "pom.xml").getroot()
    pinned = pom.findtext("m:properties/m:kafka.version", namespaces={"m": "http://maven.apache.org/POM/4.0.0"})
    assert pinned and _connect()["spec"]["version"] == pinned


def test_metrics_config_points_at_the_configmap_and_its_rules_compile():
    ref = _connect()["spec"]["metricsConfig"]
    assert ref["type"] == "jmxPrometheusExporter"
    cm = yaml.safe_load((STRIMZI / "connect-metrics.yaml").read_text())
    key = ref["valueFrom"]["configMapKeyRef"]
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == key["name"]
    rules = yaml.safe_load(cm["data"][key["key"]])["rules"]
    patterns = [r["pattern"] for r in rules]
    for p in patterns:
        re.compile(p)  # Java and Python agree on what these use
    assert any(p.startswith("kafka.connect<") for p in patterns)
    assert any(p.startswith("debezium.") for p in patterns)
    # the MBean names the rules are for: Connect's task status and Debezium Postgres's streaming lag
    task = "kafka.connect<type=connector-task-metrics, connector=users, task=0><>status: running"
    lag = ("debezium.postgres<type=connector-metrics, context=streaming, server=producer>"
           "<>MilliSecondsBehindSource")
    assert any(re.fullmatch(p, task) for p in patterns)
    assert any(re.fullmatch(p, lag) for p in patterns)


def test_names_kubernetes_rejects_are_refused_with_advice():
    d = parse_definition({"name": "Users_CDC", "config": {"connector.class": "X"}}, environ={})
    with pytest.raises(DefinitionError, match="not a valid Kubernetes resource name"):
        kafka_connector(d, "c")


def test_render_cli_prints_the_resources():
    result = CliRunner().invoke(cli, ["connectors", "render", "-f", str(ROOT / "connectors" / "users.yaml"),
                                      "--cluster", "prod-connect"])
    assert result.exit_code == 0
    doc = yaml.safe_load(result.output)
    assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "prod-connect"
    assert doc["apiVersion"] == "kafka.strimzi.io/v1"

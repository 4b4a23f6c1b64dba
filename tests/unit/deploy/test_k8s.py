"""deploy/k8s: the Kustomize base and overlays, built in Python (tests/unit/deploy/kustomize.py) and
checked object by object: Kubernetes kinds against the Kubernetes JSON schemas kubernetes-validate
bundles (strict: unknown fields are errors; no network), Strimzi kinds against the CRDs vendored in
tests/unit/connectors/crds/, the ServiceMonitor structurally (no schema for it is at hand)."""

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ecst.connectors.definition import load_definitions
from ecst.connectors.strimzi import render
from ecst.consumer.config import parse_consumer_config
from tests.unit.connectors.crd_schema import STRIMZI_CRDS, errors, load_crd
from tests.unit.deploy.kustomize import build, key

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.33.0"
TARGETS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
NAMESPACES = {"base": None, "dev": "ecst-dev", "prod": "ecst"}


def _by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    [o] = [o for o in _by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    return o


def _k8s_errors(obj: dict) -> list[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


@pytest.fixture(scope="module", params=sorted(TARGETS))
def target(request) -> tuple[str, list[dict]]:
    return request.param, build(TARGETS[request.param])


def test_every_object_is_valid(target):
    _, objects = target
    kinds = {o["kind"] for o in objects}
    assert kinds == {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor",
                     "KafkaConnect", "KafkaConnector"}
    for o in objects:
        if o["kind"] in STRIMZI_CRDS:
            assert errors(o, load_crd(STRIMZI_CRDS[o["kind"]])) == [], key(o)
        elif o["kind"] == "ServiceMonitor":
            assert o["apiVersion"] == "monitoring.coreos.com/v1"
            assert o["spec"]["selector"]["matchLabels"] and o["spec"]["endpoints"]
        else:
            assert _k8s_errors(o) == [], key(o)
    assert len({key(o) for o in objects}) == len(objects)


def test_the_schema_check_catches_a_wrong_field():
    objects = build(TARGETS["base"])
    deployment = _one(objects, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/healthz"
    assert any("pth" in e for e in _k8s_errors(deployment))
    pdb = _one(objects, "PodDisruptionBudget")
    pdb["spec"]["maxUnavailable"] = [1]
    assert _k8s_errors(pdb)


def test_namespaces_and_labels(target):
    name, objects = target
    for o in objects:
        assert o["metadata"].get("namespace") == NAMESPACES[name]
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ecst"


def test_the_consumer_deployment(target):
    name, objects = target
    d = _one(objects, "Deployment", "ecst-consumer")
    assert d["spec"]["replicas"] == (1 if name == "dev" else 3)
    pod = d["spec"]["template"]["spec"]
    labels = d["spec"]["template"]["metadata"]["labels"]
    # the image's USER is a numeric UID (consumer/Dockerfile), so the kubelet can check it is not root
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [c] = pod["containers"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # SIGTERM: the batch in flight is applied and committed; Kubernetes' default 30 s is not enough margin
    assert pod["terminationGracePeriodSeconds"] > 30
    env = {e["name"]: e for e in c["env"]}
    assert env["ECST_HTTP_HOST"]["value"] == "0.0.0.0"
    secrets = {s["metadata"]["name"]: s for s in _by_kind(objects, "Secret")}
    for var in ("ECST_STATE_URL", "ECST_BOOTSTRAP_SERVERS"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["stringData"]
    # the mounted ConfigMap is a consumer config ecst accepts, read with the pod's environment
    [mount] = [m for m in c["volumeMounts"] if m["name"] == "config"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    cm = _one(objects, "ConfigMap", volume["configMap"]["name"])
    [(file, text)] = cm["data"].items()
    # the image's ENTRYPOINT is ["ecst"] (consumer/Dockerfile): args are what follows it
    assert c["args"] == ["consume", "-c", f"{mount['mountPath']}/{file}"]
    secret = secrets["ecst-consumer"]["stringData"]
    environ = {"ECST_STATE_URL": secret["state-url"],
               "ECST_BOOTSTRAP_SERVERS": secret["kafka-bootstrap-servers"],
               "ECST_HTTP_HOST": env["ECST_HTTP_HOST"]["value"]}
    config = parse_consumer_config(yaml.safe_load(text), file, environ)
    assert config.http_port == port and config.http_host == "0.0.0.0"
    assert config.state_url.reveal().startswith("postgresql://")
    assert config.group_id == "users-service" and config.group_instance_id == ""
    assert [t.topic for t in config.topics] == ["producer.public.users"]
    # Kafka over the TLS listener the Connect workers use, trusting the CA they trust, read from a mount
    connect = _one(objects, "KafkaConnect")["spec"]
    security = config.kafka_security
    assert security is not None and security.protocol == "SSL" and security.check_hostname
    assert config.bootstrap_servers == connect["bootstrapServers"]
    [ca_mount] = [m for m in c["volumeMounts"] if security.cafile.startswith(m["mountPath"] + "/")]
    [ca_volume] = [v for v in pod["volumes"] if v["name"] == ca_mount["name"]]
    trusted = {t["secretName"] for t in connect["tls"]["trustedCertificates"]}
    assert ca_volume["secret"]["secretName"] in trusted
    assert {"key": "ca.crt", "path": Path(security.cafile).name} in ca_volume["secret"]["items"]


def test_the_consumer_config_keeps_consumer_users_yaml_mapping():
    cm = _one(build(TARGETS["base"]), "ConfigMap", "ecst-consumer-config")
    ours = yaml.safe_load(cm["data"]["users.yaml"])
    theirs = yaml.safe_load((ROOT / "consumer" / "users.yaml").read_text())
    assert ours["topics"] == theirs["topics"]
    assert ours["kafka"]["group_id"] == theirs["kafka"]["group_id"]
    assert ours["dead_letter_topic"] == theirs["dead_letter_topic"]


def test_service_pdb_and_servicemonitor_select_the_consumer(target):
    _, objects = target
    pod_labels = _one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    svc = _one(objects, "Service", "ecst-consumer")
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert {p["name"] for p in svc["spec"]["ports"]} == {"http"}
    pdb = _one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    sm = _one(objects, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"


def test_the_strimzi_resources(target):
    name, objects = target
    connect = _one(objects, "KafkaConnect")
    connector = _one(objects, "KafkaConnector")
    assert connect["apiVersion"] == connector["apiVersion"] == "kafka.strimzi.io/v1"
    assert connector["metadata"]["labels"]["strimzi.io/cluster"] == connect["metadata"]["name"]
    assert connect["spec"]["replicas"] == {"dev": 1, "prod": 3}.get(name, 2)
    # every Secret and ConfigMap the Connect container reads is in the build, with that key
    data = {(o["kind"], o["metadata"]["name"]): {**o.get("data", {}), **o.get("stringData", {})}
            for o in objects if o["kind"] in ("Secret", "ConfigMap")}
    for e in connect["spec"]["template"]["connectContainer"]["env"]:
        [(kind, ref)] = e["valueFrom"].items()
        assert ref["key"] in data[("Secret" if kind == "secretKeyRef" else "ConfigMap", ref["name"])]
    metrics = connect["spec"]["metricsConfig"]["valueFrom"]["configMapKeyRef"]
    assert metrics["key"] in data[("ConfigMap", metrics["name"])]


def test_the_committed_connector_is_the_rendered_one():
    text = (K8S / "base" / "kafka-connector-users.yaml").read_text()
    defs = load_definitions([ROOT / "connectors"], environ={})
    assert list(yaml.safe_load_all(text)) == list(yaml.safe_load_all(render(defs, "ecst-connect")))


def test_the_prod_overlay_carries_the_prod_connector_overlay():
    [prod] = load_definitions([ROOT / "connectors"], environ={}, env="prod")
    [rendered] = yaml.safe_load_all(render([prod], "ecst-connect"))
    built = _one(build(TARGETS["prod"]), "KafkaConnector", "users")
    assert built["spec"] == rendered["spec"]


def test_a_kustomization_beyond_the_subset_is_refused(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nimages: [{name: x, newTag: y}]\n")
    with pytest.raises(ValueError, match="images"):
        build(tmp_path)


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl is not installed: the Python build stands")
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_python_build_is_what_kubectl_kustomize_prints(name):
    out = subprocess.run(["kubectl", "kustomize", str(TARGETS[name])], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    theirs = {key(o): o for o in yaml.safe_load_all(out) if o}
    ours = {key(o): o for o in build(TARGETS[name])}
    assert ours == theirs

"""docker-compose.yml cannot run here (no Docker engine); check what can be checked: it parses,
and it wires the same connector YAML, ports, roles and topics as the local stack; the consumer runs
consumer/Dockerfile's image from consumer/users.yaml; every service restarts, is health-checked and
keeps its data in a named volume."""

import base64
import re
import uuid
from pathlib import Path

import yaml

from ecst.cli.consume import consume
from ecst.connectors.definition import load_definition
from ecst.connectors.doctor import heartbeat_table
from ecst.consumer.config import DEFAULT_TOPIC, check_instance_id, load_consumer_config
from ecst.demo import topic_for
from ecst.settings import Settings
from ecst.stack.postgres import CONNECTOR_ROLE, PRODUCER_DB, SERVER_CONF
from tests.unit.dockerfile import Instruction, parse, stages

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
USERS = load_definition(ROOT / "connectors" / "users.yaml", environ={})
CONSUMER = SERVICES["consumer"]
DOCKERFILE = stages(parse(ROOT / CONSUMER["build"]["context"] / CONSUMER["build"]["dockerfile"]))[-1]


def mounts(service: str) -> dict[str, str]:
    """{path inside the container: source} of a service's volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in SERVICES[service].get("volumes", [])}


def in_image(keyword: str) -> Instruction:
    [found] = [i for i in DOCKERFILE if i.keyword == keyword]
    return found


def consumer_config():
    """consumer/users.yaml as the consumer container reads it: the image's ENV, then compose's."""
    env = {}
    for i in DOCKERFILE:
        if i.keyword == "ENV":
            env.update(word.split("=", 1) for word in i.args.split())
    mounted = Path(ROOT / mounts("consumer")["/etc/ecst/users.yaml"])
    return load_consumer_config(mounted, environ={**env, **CONSUMER["environment"]})


def test_the_four_services_use_the_intended_images():
    assert set(SERVICES) == {"postgres", "kafka", "connect", "consumer"}
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert SERVICES["kafka"]["image"] == "apache/kafka:4.3.0"
    assert SERVICES["connect"]["image"] == "quay.io/debezium/connect:3.6"
    assert CONSUMER["build"] == {"context": ".", "dockerfile": "consumer/Dockerfile"}
    assert CONSUMER["image"]  # a name for the built image, for `docker compose push` or a registry


def test_postgres_runs_with_logical_wal_and_creates_the_connector_role_and_publication():
    assert "wal_level=logical" in SERVICES["postgres"]["command"]
    assert SERVICES["postgres"]["environment"]["POSTGRES_DB"] == PRODUCER_DB
    init = SERVICES["postgres"]["volumes"][0].split(":")[0]
    script = (ROOT / init).read_text()
    assert f"CREATE ROLE {CONNECTOR_ROLE} WITH LOGIN REPLICATION NOSUPERUSER" in script
    signal = USERS.config["signal.data.collection"].split(".")[-1]
    beat = heartbeat_table(USERS.config["heartbeat.action.query"]).split(".")[-1]
    publication = USERS.config["publication.name"]
    assert f"CREATE PUBLICATION {publication} FOR TABLE users, {signal}, {beat};" in script
    assert f"-v table={signal} -f /ecst-sql/signal.sql" in script
    assert f"GRANT SELECT, INSERT ON {signal} TO {CONNECTOR_ROLE}" in script
    assert f"-v table={beat} -f /ecst-sql/heartbeat.sql" in script
    assert f"GRANT SELECT, INSERT, UPDATE ON {beat} TO {CONNECTOR_ROLE}" in script
    assert "max_slot_wal_keep_size=4GB" in SERVICES["postgres"]["command"]
    assert "max_slot_wal_keep_size = '4GB'" in SERVER_CONF  # as the local stack's
    # the table is the one the local stack's demo creates, from the same file
    mounts = dict(v.split(":")[:2] for v in SERVICES["postgres"]["volumes"])
    sql_dir = next(host for host, inside in mounts.items() if inside == "/ecst-sql")
    assert "-f /ecst-sql/users.sql" in script and (ROOT / sql_dir / "users.sql").exists()


def test_every_worker_side_variable_of_the_connector_yaml_is_set_in_the_connect_service():
    referenced = set()
    for value in USERS.config.values():
        referenced |= set(re.findall(r"\$\{env:([A-Za-z_0-9]+)\}", value))
    env = SERVICES["connect"]["environment"]
    assert referenced and referenced <= set(env)
    assert env["ECST_CONNECTOR_USER"] == CONNECTOR_ROLE
    assert env["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"].endswith("EnvVarConfigProvider")


def test_host_ports_are_the_local_stack_defaults_so_ecst_defaults_work_on_both():
    s = Settings()
    def host_port(service):
        return int(SERVICES[service]["ports"][0].split(":")[1])
    assert host_port("postgres") == s.pg_port
    assert host_port("kafka") == s.kafka_port
    assert host_port("connect") == s.connect_port


def test_the_consumer_runs_the_image_default_command_on_consumer_users_yaml_mounted_read_only():
    assert "command" not in CONSUMER and "entrypoint" not in CONSUMER  # the image's: consume --config ...
    cmd = in_image("CMD").exec_form()
    config_path = cmd[cmd.index("--config") + 1]
    assert CONSUMER["volumes"].count(f"./consumer/users.yaml:{config_path}:ro") == 1


def test_the_consumer_reads_the_topic_the_connector_writes_from_the_compose_broker():
    config = consumer_config()
    assert [m.topic for m in config.topics] == [topic_for(USERS)] == [DEFAULT_TOPIC]
    # the broker's listener for containers, not the host's
    advertised = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://{config.bootstrap_servers}" in advertised.split(",")
    assert CONSUMER["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert config.group_id == "users-service"
    # a static member id that survives the container's re-creation (the default names the hostname)
    [option] = [p for p in consume.params if p.name == "group_instance_id"]
    assert option.envvar in CONSUMER["environment"]
    assert check_instance_id(CONSUMER["environment"][option.envvar], option.envvar)


def test_the_consumer_state_is_in_the_owner_only_volume():
    """The state holds users' rows: it lives in the image's state folder (0700 for the image's user,
    which a new named volume copies, mode included), mounted from a named volume."""
    folder = in_image("VOLUME").args.strip('[]"')
    state = consumer_config().state_url.reveal()
    assert state.startswith(f"sqlite:///{folder}/"), state
    assert mounts("consumer")[folder] in COMPOSE["volumes"]
    setup = " ".join(i.args for i in DOCKERFILE if i.keyword == "RUN")
    assert re.search(rf"chmod 0?700 {folder}\b", setup), setup


def test_the_consumer_serves_http_on_the_published_and_health_checked_port():
    config = consumer_config()
    assert config.http_host == "0.0.0.0"
    assert CONSUMER["ports"] == [f"127.0.0.1:{config.http_port}:{config.http_port}"]
    assert in_image("EXPOSE").args == str(config.http_port)
    # the same check as the image's HEALTHCHECK, at the same pace
    check = in_image("HEALTHCHECK")
    assert CONSUMER["healthcheck"]["test"] == ["CMD", *check.exec_form()]
    assert f"http://127.0.0.1:{config.http_port}/healthz" in check.exec_form()[-1]
    for flag, value in check.flags().items():
        assert str(CONSUMER["healthcheck"][flag.replace("-", "_")]) == value, flag


def test_every_service_restarts_and_is_health_checked():
    """A consumer started before its connector exits after waiting for the topic: the restart policy
    starts it again, until the topic exists."""
    for name, service in SERVICES.items():
        assert service.get("restart") == "unless-stopped", name
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_kafka_postgres_and_the_consumer_state_keep_their_data_in_named_volumes():
    declared = set(COMPOSE["volumes"])
    assert mounts("postgres")["/var/lib/postgresql/data"] in declared  # postgres:17's PGDATA
    log_dirs = SERVICES["kafka"]["environment"]["KAFKA_LOG_DIRS"]
    assert mounts("kafka")[log_dirs] in declared
    assert mounts("consumer")[in_image("VOLUME").args.strip('[]"')] in declared
    used = {source for s in SERVICES for source in mounts(s).values()}
    assert declared <= used


def test_the_kafka_cluster_id_is_a_kafka_uuid():
    """As `kafka-storage.sh random-uuid` prints: 16 random bytes (a version-4 UUID) in base64url
    without padding, 22 characters, not starting with '-'."""
    cluster_id = SERVICES["kafka"]["environment"]["CLUSTER_ID"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id) and not cluster_id.startswith("-")
    raw = base64.urlsafe_b64decode(cluster_id + "==")
    assert len(raw) == 16 and base64.urlsafe_b64encode(raw).decode().rstrip("=") == cluster_id
    assert uuid.UUID(bytes=raw).version == 4


def test_the_connect_worker_has_the_single_worker_settings_of_the_local_stack():
    from ecst.stack.kafka import SINGLE_WORKER

    env = SERVICES["connect"]["environment"]
    for key, value in SINGLE_WORKER.items():
        assert env["CONNECT_" + key.upper().replace(".", "_")] == str(value), key


def test_the_connect_worker_lets_connectors_override_their_producer_settings_like_the_local_stack():
    """connectors/users.yaml sets producer.override.linger.ms: both workers must allow it."""
    import inspect

    from ecst.stack import kafka

    assert any(k.startswith("producer.override.") for k in USERS.config)
    assert SERVICES["connect"]["environment"]["CONNECT_CONNECTOR_CLIENT_CONFIG_OVERRIDE_POLICY"] == "All"
    assert '"connector.client.config.override.policy": "All"' in inspect.getsource(kafka.ConnectWorker)

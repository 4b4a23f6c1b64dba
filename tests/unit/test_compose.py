"""docker-compose.yml cannot run here (no Docker engine); check what can be checked: it parses,
and it wires the same connector YAML, ports, roles and topics as the local stack."""

import re
from pathlib import Path

import yaml

from ecst.connectors.definition import load_definition
from ecst.connectors.doctor import heartbeat_table
from ecst.consumer.config import DEFAULT_TOPIC
from ecst.demo import topic_for
from ecst.settings import Settings
from ecst.stack.postgres import CONNECTOR_ROLE, PRODUCER_DB, SERVER_CONF

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
USERS = load_definition(ROOT / "connectors" / "users.yaml", environ={})


def test_the_four_services_use_the_intended_images():
    assert set(SERVICES) == {"postgres", "kafka", "connect", "consumer"}
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert SERVICES["kafka"]["image"] == "apache/kafka:4.3.0"
    assert SERVICES["connect"]["image"] == "quay.io/debezium/connect:3.6"
    assert (ROOT / SERVICES["consumer"]["build"]["dockerfile"]).exists()


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


def test_the_consumer_reads_the_topic_the_connector_writes():
    command = SERVICES["consumer"]["command"]
    assert command[command.index("--topic") + 1] == topic_for(USERS) == DEFAULT_TOPIC


def test_the_consumer_state_folder_is_owner_only():
    """The state holds users' rows: the image's /data (which a new named volume copies, mode
    included) is 0700 for the `ecst` user that runs the consumer."""
    dockerfile = (ROOT / SERVICES["consumer"]["build"]["dockerfile"]).read_text()
    state = SERVICES["consumer"]["command"][SERVICES["consumer"]["command"].index("--state-url") + 1]
    folder = state.removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert folder in [v.split(":")[1] for v in SERVICES["consumer"]["volumes"]]
    assert re.search(rf"chmod 0?700 {folder}\b", dockerfile), dockerfile


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

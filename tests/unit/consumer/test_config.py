from pathlib import Path

import pytest

from ecst.consumer.config import (
    ConsumerConfig,
    check_config,
    default_instance_id,
    load_consumer_config,
    parse_consumer_config,
)
from ecst.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[3]

def test_the_repository_consumer_config_loads():
    c = load_consumer_config(ROOT / "consumer" / "users.yaml", environ={})
    assert c.group_id == "users-service" and c.dead_letter_topic == "ecst.dlq.users-service"
    assert c.bootstrap_servers == "127.0.0.1:19092" and c.http_port == 8080
    m = c.mapping("producer.public.users")
    assert (m.table, m.key, m.columns["full_name"]) == ("users", ("id",), "name")


@pytest.mark.parametrize("doc, message", [
    ({"topcs": []}, "unknown key 'topcs'"),
    ({"kafka": {"group": "x"}}, "unknown key kafka.group"),
    ({"batch_size": "many"}, "batch_size: 'many' is not a batch size"),
    ({"http": {"host": "0.0.0.0:8080"}}, "http.host: '0.0.0.0:8080' is not an address to bind"),
    ({"http": {"host": ""}}, "http.host: '' is not an address to bind"),
    ({"http": {"host": 8080}}, "http.host: 8080 is not an address to bind"),
    ({"readiness": "soon"}, "readiness: expected one of snapshot, caught-up, always"),
    ({"topics": [{"topic": "t", "key": ["id"], "columns": ["email"]}]}, "key column 'id' must be kept"),
    ({"topics": [{"topic": "t", "colums": ["a"]}]}, r"topics\[0\]: unknown key 'colums'"),
    ({"state": {"url": "${NOPE}"}}, "NOPE is not set"),
    ({"topics": [{"topic": "t", "tombstones": "yes"}]}, "tombstones: expected ignore or delete"),
    ({"batch_size": 100_001}, "batch_size: 100001 is not a batch size: use a whole number of records from 1 "
     "to 100000"),
    ({"batch_size": True}, "batch_size: True is not a batch size"),
    ({"http": {"port": 65536}}, "http.port: 65536 is not a TCP port: use a number from 1 to 65535"),
    ({"http": {"port": True}}, "http.port: True is not a TCP port"),
    ({"http": {"port": "8080"}}, "http.port: '8080' is not a TCP port"),
    ({"tombstone_retention_hours": -0.5}, "tombstone_retention_hours: -0.5 is not a retention"),
    ({"tombstone_retention_hours": float("nan")}, "tombstone_retention_hours: nan is not a retention"),
    ({"tombstone_retention_hours": False}, "tombstone_retention_hours: False is not a retention"),
    ({"kafka": {"group_instance_id": "web 1"}},
     "kafka.group_instance_id: 'web 1' is not a group instance id"),
    ({"kafka": {"group_instance_id": "x" * 250}}, "is not a group instance id: use up to 249"),
    ({"fail_fast": 1}, "fail_fast: expected true or false"),
])
def test_config_errors_name_the_file_and_key(doc, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_consumer_config(doc, "svc.yaml", environ={})
    assert "svc.yaml" in str(err.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  group_id: [x\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: YAML syntax error at line 3"):
        load_consumer_config(path, environ={})


def test_defaults():
    c = ConsumerConfig()
    assert c.readiness == "snapshot" and c.dead_letter_topic is None and not c.fail_fast
    assert "***" in repr(c.state_url)


def test_numbers_at_their_limits_are_accepted():
    doc = {"batch_size": 100_000, "http": {"port": 65535}, "tombstone_retention_hours": 0}
    c = parse_consumer_config(doc, "svc.yaml", environ={})
    assert (c.batch_size, c.http_port, c.tombstone_retention_hours) == (100_000, 65535, 0)
    low = parse_consumer_config({"batch_size": 1, "http": {"port": 1}}, "svc.yaml", environ={})
    assert (low.batch_size, low.http_port) == (1, 1)


def test_group_instance_id_static_dynamic_or_derived():
    assert parse_consumer_config({}, "svc.yaml", environ={}).group_instance_id is None  # derived by the CLI
    static = parse_consumer_config({"kafka": {"group_instance_id": "users-0"}}, "svc.yaml", environ={})
    assert static.group_instance_id == "users-0"
    for dynamic in ("", None):
        doc = {"kafka": {"group_instance_id": dynamic}}
        assert parse_consumer_config(doc, "svc.yaml", environ={}).group_instance_id == ""
    assert default_instance_id("users service", hostname="pod-0.svc") == "pod-0.svc-users-service"
    assert len(default_instance_id("g" * 300, hostname="h")) == 249


def test_a_config_built_in_python_is_checked_too():
    check_config(ConsumerConfig(batch_size=10))
    with pytest.raises(ConfigError, match="^batch_size: 0 is not a batch size"):
        check_config(ConsumerConfig(batch_size=0))
    with pytest.raises(ConfigError, match="^http.port: 70000 is not a TCP port"):
        check_config(ConsumerConfig(http_port=70000))


def test_overlap_is_true_false_or_auto_and_auto_overlaps_a_postgresql_state_only(store):
    from ecst.consumer.runner import Consumer

    for value, expected in ((True, True), (False, False), ("auto", None)):
        assert parse_consumer_config({"overlap": value}, "svc.yaml", environ={}).overlap is expected
    assert parse_consumer_config({}, "svc.yaml", environ={}).overlap is None
    with pytest.raises(ConfigError, match=r"^svc.yaml: overlap: expected true, false or auto, got 'yes'"):
        parse_consumer_config({"overlap": "yes"}, "svc.yaml", environ={})
    sqlite = Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1")
    assert sqlite.overlap is False  # auto: SQLite's apply holds the GIL (docs/benchmarks.md)
    on = ConsumerConfig(overlap=True)
    assert Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1", config=on).overlap
    assert not Consumer(store, ["t"], bootstrap_servers="127.0.0.1:1", overlap=False,
                        config=ConsumerConfig(overlap=True)).overlap


def test_decode_in_database_is_true_or_false_and_true_by_default():
    assert parse_consumer_config({}, "svc.yaml", environ={}).decode_in_database is True
    off = parse_consumer_config({"decode_in_database": False}, "svc.yaml", environ={})
    assert off.decode_in_database is False
    with pytest.raises(ConfigError, match=r"^svc.yaml: decode_in_database: expected true or false"):
        parse_consumer_config({"decode_in_database": "auto"}, "svc.yaml", environ={})


@pytest.mark.parametrize("host, bound", [("0.0.0.0", "0.0.0.0"), ("::", "::"), ("[::1]", "::1"),
                                         ("consumer-0.svc", "consumer-0.svc")])
def test_http_host_accepts_names_and_addresses(host, bound):
    assert parse_consumer_config({"http": {"host": host}}, "svc.yaml", environ={}).http_host == bound

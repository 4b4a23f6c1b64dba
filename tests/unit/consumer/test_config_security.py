"""The consumer YAML's Kafka security keys (kafka.security_protocol, kafka.sasl.*, kafka.ssl.*):
read with ${VAR} interpolation, every mistake naming the file and the key; the CLI's options and
ECST_KAFKA_* variables over them."""

import pytest

from ecst.cli.options import apply_kafka_security
from ecst.consumer.config import ConsumerConfig, parse_consumer_config
from ecst.exceptions import ConfigError
from ecst.kafka_security import KafkaSecurity


def test_the_security_keys_are_read_and_the_password_interpolated_as_a_secret():
    doc = {"kafka": {"security_protocol": "sasl_ssl",
                     "sasl": {"mechanism": "SCRAM-SHA-512", "username": "svc", "password": "${PW}"},
                     "ssl": {"cafile": "/etc/ca.crt", "check_hostname": False}}}
    config = parse_consumer_config(doc, "svc.yaml", environ={"PW": "from-the-env-1"})
    sec = config.kafka_security
    assert sec is not None
    assert (sec.protocol, sec.mechanism, sec.username, sec.cafile, sec.check_hostname) == (
        "SASL_SSL", "SCRAM-SHA-512", "svc", "/etc/ca.crt", False)
    assert sec.password is not None and sec.password.reveal() == "from-the-env-1"
    assert "from-the-env-1" not in repr(config)


def test_no_security_key_leaves_the_config_plaintext():
    assert parse_consumer_config({"kafka": {"group_id": "g"}}, "svc.yaml", environ={}).kafka_security is None


@pytest.mark.parametrize(("doc", "message"), [
    ({"kafka": {"sasl": {"user": "x"}}}, r"^svc.yaml: unknown key kafka.sasl.user; allowed: mechanism, "
     r"password, username$"),
    ({"kafka": {"ssl": {"ca": "x"}}}, r"^svc.yaml: unknown key kafka.ssl.ca; allowed: cafile, certfile, "),
    ({"kafka": {"sasl": "PLAIN"}}, r"^svc.yaml: kafka.sasl: expected a mapping"),
    ({"kafka": {"security_protocol": "TLS"}}, r"^svc.yaml: kafka.security_protocol .*'TLS' is not a "
     r"security protocol: use PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL$"),
    ({"kafka": {"sasl": {"mechanism": "GSSAPI"}}}, r"^svc.yaml: kafka.sasl.mechanism .*: use PLAIN, "),
    ({"kafka": {"ssl": {"check_hostname": "no"}}}, r"^svc.yaml: kafka.ssl.check_hostname: expected true "
     r"or false, got 'no'$"),
    ({"kafka": {"sasl": {"password": 1234}}}, r"^svc.yaml: kafka.sasl.password: expected a string"),
])
def test_a_mistake_names_the_file_and_the_key(doc, message):
    with pytest.raises(ConfigError, match=message):
        parse_consumer_config(doc, "svc.yaml", environ={})


def test_options_and_variables_go_over_the_file():
    config = ConsumerConfig(kafka_security=KafkaSecurity("SASL_SSL", "PLAIN", "file-user"))
    none = {"protocol": None, "mechanism": None, "username": None, "password": None, "cafile": None,
            "certfile": None, "keyfile": None, "check_hostname": None}
    assert apply_kafka_security(config, none) is config
    changed = apply_kafka_security(config, {**none, "username": "cli-user", "password": "pw-from-env"})
    sec = changed.kafka_security
    assert sec is not None
    assert (sec.protocol, sec.mechanism, sec.username) == ("SASL_SSL", "PLAIN", "cli-user")
    assert sec.password is not None and sec.password.reveal() == "pw-from-env"

"""Kafka security settings: each value checked with the allowed ones named, completeness and files
checked before a client is built, the same settings in kafka-python's and librdkafka's words, and
the password never printed."""

import pytest

from ecst import kafka
from ecst.exceptions import ConfigError
from ecst.kafka_security import KafkaSecurity, from_env, from_values
from ecst.settings import Secret, redact

PASSWORD = "s3cret-password-1"


def scram(tmp_path, **changes):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    values = {"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512", "username": "svc",
              "password": Secret(PASSWORD), "cafile": str(ca), **changes}
    return KafkaSecurity(**values)


def test_the_default_is_plaintext_and_adds_nothing_but_the_protocol():
    settings = kafka.KafkaSettings("a:9092")
    assert settings.security == KafkaSecurity()
    assert settings.client_options()["security_protocol"] == "PLAINTEXT"
    assert settings.confluent_options()["security.protocol"] == "PLAINTEXT"
    assert settings.describe() == "a:9092"


def test_sasl_ssl_in_kafka_pythons_words(tmp_path):
    sec = scram(tmp_path, check_hostname=False)
    options = kafka.KafkaSettings("b:9094", security=sec).client_options()
    assert {k: v for k, v in options.items() if k not in ("bootstrap_servers", "request_timeout_ms")} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
        "sasl_plain_password": PASSWORD, "ssl_cafile": str(tmp_path / "ca.crt"), "ssl_check_hostname": False}


def test_sasl_ssl_in_librdkafkas_words(tmp_path):
    sec = scram(tmp_path)
    options = kafka.KafkaSettings("b:9094", security=sec).confluent_options()
    assert {k: v for k, v in options.items() if k not in ("bootstrap.servers", "socket.timeout.ms")} == {
        "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "svc",
        "sasl.password": PASSWORD, "ssl.ca.location": str(tmp_path / "ca.crt"),
        "ssl.endpoint.identification.algorithm": "https"}


def test_mutual_tls_passes_the_client_certificate_and_key(tmp_path):
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("x")
    sec = KafkaSecurity("SSL", cafile=str(tmp_path / "ca.crt"), certfile=str(tmp_path / "client.crt"),
                        keyfile=str(tmp_path / "client.key")).check()
    assert sec.kafka_python_options() == {
        "security_protocol": "SSL", "ssl_check_hostname": True, "ssl_cafile": str(tmp_path / "ca.crt"),
        "ssl_certfile": str(tmp_path / "client.crt"), "ssl_keyfile": str(tmp_path / "client.key")}
    assert sec.confluent_options()["ssl.certificate.location"] == str(tmp_path / "client.crt")
    assert sec.confluent_options()["ssl.key.location"] == str(tmp_path / "client.key")
    assert "sasl_mechanism" not in sec.kafka_python_options()


@pytest.mark.parametrize(("values", "message"), [
    ({"protocol": "TLS"}, r"^kafka.security_protocol \(--kafka-security-protocol, "
     r"ECST_KAFKA_SECURITY_PROTOCOL\): 'TLS' is not a security protocol: use PLAINTEXT, SSL, "
     r"SASL_PLAINTEXT, SASL_SSL$"),
    ({"mechanism": "GSSAPI"}, r"^kafka.sasl.mechanism .*'GSSAPI' is not a SASL mechanism ecst supports: "
     r"use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512$"),
    ({"username": ""}, r"^kafka.sasl.username .*: expected a non-empty string"),
    ({"check_hostname": "maybe"}, r"^kafka.ssl.check_hostname .*: expected true or false, got 'maybe'$"),
])
def test_a_wrong_value_names_its_key_and_the_allowed_ones(values, message):
    with pytest.raises(ConfigError, match=message):
        from_values(values)


@pytest.mark.parametrize(("changes", "message"), [
    ({"password": None}, r"^kafka.sasl.password \(ECST_KAFKA_SASL_PASSWORD\) is missing: SASL_SSL needs the "
     r"SASL user's password$"),
    ({"username": None}, r"^kafka.sasl.username .* is missing: SASL_SSL needs the SASL user$"),
    ({"mechanism": None}, r"^kafka.sasl.mechanism .* is missing: SASL_SSL needs one of PLAIN, "),
    ({"protocol": "SSL"},
     r"^kafka.sasl.mechanism .* is set but kafka.security_protocol is SSL: use SASL_SSL"),
    ({"protocol": "SASL_PLAINTEXT"}, r"^kafka.ssl.cafile .* is set but kafka.security_protocol is "
     r"SASL_PLAINTEXT: use SSL or SASL_SSL"),
    ({"certfile": "/etc/hostname"}, r"^kafka.ssl.certfile .* is set without kafka.ssl.keyfile: a client "
     r"certificate needs both"),
])
def test_an_incomplete_whole_is_refused_before_any_client_is_built(tmp_path, changes, message):
    import dataclasses

    sec = dataclasses.replace(scram(tmp_path), **changes)
    with pytest.raises(ConfigError, match=message):
        kafka.KafkaSettings("b:9094", security=sec)


def test_a_missing_file_names_the_key_the_file_and_what_it_should_be(tmp_path):
    sec = scram(tmp_path, cafile=str(tmp_path / "nope.crt"))
    with pytest.raises(ConfigError, match=r"^kafka.ssl.cafile \(--kafka-ssl-cafile, ECST_KAFKA_SSL_CAFILE\): "
                       rf"{tmp_path}/nope.crt does not exist or is not a file: give the path of the CA "
                       r"certificate \(PEM\) that signed the brokers' certificates$"):
        sec.check()


def test_variables_override_the_file_and_the_password_stays_a_secret(tmp_path):
    base = KafkaSecurity("SASL_SSL", "PLAIN", "from-file")
    sec = from_env({"ECST_KAFKA_SASL_MECHANISM": "scram-sha-256", "ECST_KAFKA_SASL_PASSWORD": PASSWORD,
                    "ECST_KAFKA_SSL_CHECK_HOSTNAME": "false", "ECST_KAFKA_SASL_USERNAME": ""}, base)
    assert (sec.protocol, sec.mechanism, sec.username, sec.check_hostname) == (
        "SASL_SSL", "SCRAM-SHA-256", "from-file", False)
    assert isinstance(sec.password, Secret) and sec.password.reveal() == PASSWORD
    assert PASSWORD not in repr(sec) and PASSWORD not in repr(kafka.KafkaSettings("b:1", security=sec))
    assert PASSWORD not in sec.describe()
    assert redact(f"login failed with {PASSWORD}") == "login failed with ***"


def test_as_settings_applies_security_and_keeps_the_client(tmp_path):
    sec = scram(tmp_path)
    settings = kafka.as_settings("b:9094", "confluent", sec)
    assert (settings.client, settings.security) == ("confluent", sec)
    assert kafka.as_settings(settings, None, None) is settings
    assert settings.describe() == "b:9094 (SASL_SSL, SCRAM-SHA-512 as 'svc')"


def test_a_refused_login_is_one_line_without_the_password(tmp_path):
    from kafka.errors import SaslAuthenticationFailedError

    settings = kafka.KafkaSettings("b:9094", security=scram(tmp_path))
    error = kafka.auth_error(settings, SaslAuthenticationFailedError("invalid credentials"))
    assert error is not None
    assert str(error) == ("Kafka at b:9094 refused SASL authentication for user 'svc' (SCRAM-SHA-512; "
                          "the broker says: invalid credentials): check kafka.sasl.username and "
                          "kafka.sasl.password (ECST_KAFKA_SASL_USERNAME, ECST_KAFKA_SASL_PASSWORD) and "
                          "kafka.sasl.mechanism")
    assert isinstance(error, ConfigError)  # a setting to fix: never waited out as an outage
    # PLAINTEXT: a timeout is only an outage, nothing to diagnose
    assert kafka.auth_error(kafka.KafkaSettings("b:9094"), kafka.KafkaTimeoutError("x")) is None


def test_check_login_says_nothing_when_no_broker_answers(tmp_path):
    settings = kafka.KafkaSettings("127.0.0.1:1", security=scram(tmp_path))
    kafka.check_login(settings)  # an outage is reported by the clients, as without security

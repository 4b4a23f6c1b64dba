"""Kafka security on the real stack: the secure profile's SASL_SSL listener (SCRAM-SHA-512, a CA
made at start) carries the consumer (kafka-python and confluent-kafka), a replay rebuild (the CLI,
settings from ECST_KAFKA_* variables) and `ecst consume` (settings from the YAML); a wrong
password or a missing CA fails in one line that says what to fix, without the password."""

import pytest

from ecst import kafka
from ecst.consumer.store import StateStore
from tests.integration import cli

WRONG = "not-the-password-4711"


@pytest.fixture
def secure(stack):
    """(KafkaSettings of the SASL_SSL listener, its KafkaSecurity)."""
    if not hasattr(stack, "stack"):
        pytest.fail("the secure profile is the local stack's: run with ECST_TEST_STACK=local")
    listener = stack.stack.kafka.secure
    assert listener.enabled, "the session stack was started without the secure profile"
    security = listener.security()
    return kafka.KafkaSettings(listener.bootstrap, security=security), security


def env_for(settings: kafka.KafkaSettings, password: str) -> dict[str, str]:
    sec = settings.security
    return {"ECST_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "ECST_KAFKA_SECURITY_PROTOCOL": sec.protocol,
            "ECST_KAFKA_SASL_MECHANISM": str(sec.mechanism), "ECST_KAFKA_SASL_USERNAME": str(sec.username),
            "ECST_KAFKA_SASL_PASSWORD": password, "ECST_KAFKA_SSL_CAFILE": str(sec.cafile)}


def test_the_plaintext_client_cannot_use_the_secure_listener(secure):
    settings, _ = secure
    plain = kafka.KafkaSettings(settings.bootstrap_servers)
    # the listener really asks for TLS and a login: a client without them gets nothing from it
    with pytest.raises(kafka.KafkaUnavailableError):
        kafka.admin(plain, request_timeout_ms=3000, bootstrap_timeout_ms=3000)
    kafka.check_login(settings)  # and the profile's own user logs in
    admin = kafka.admin(settings)
    try:
        assert admin.list_topics()
    finally:
        admin.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_consumer_and_replay_rebuild_through_sasl_ssl(capture, tmp_path, secure, client):
    settings, security = secure
    capture.create(rows=500)
    assert capture.apply() == "created"
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    try:
        # step 1: the snapshot and a few live changes, read through SASL_SSL only
        consumer = capture.consumer(store, bootstrap=settings, kafka_client=client)
        assert consumer.kafka.security == security
        consumer.run(until_ready=True)
        result = capture.compare(store)
        assert result.matches, result.summary()
        assert result.state_rows == 500
        capture.conn.execute(f'UPDATE "{capture.table}" SET email = email || \'.x\' WHERE id <= 20')
        capture.conn.execute(f'DELETE FROM "{capture.table}" WHERE id > 490')
        result = capture.converge(store, bootstrap=settings, kafka_client=client)
        assert result.matches, result.summary()
        assert result.state_rows == 490

        # step 2: a replay rebuild by the CLI, its security settings from ECST_KAFKA_* variables
        r = cli.ecst("rebootstrap", "replay", "--state-url", url, "--topic", capture.topic,
                     "--group", f"g-{capture.uid}", env=env_for(settings, security.password.reveal()))
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("replay rebuild"), r.stdout
        result = capture.compare(store)
        assert result.matches, result.summary()
        assert security.password.reveal() not in r.stdout + r.stderr
    finally:
        store.close()


def test_a_wrong_password_fails_in_one_line_naming_what_to_fix(capture, tmp_path, secure):
    settings, security = secure
    config = cli.write(tmp_path / "consumer.yaml", {
        "kafka": {"bootstrap_servers": settings.bootstrap_servers, "group_id": f"g-{capture.uid}",
                  "security_protocol": "SASL_SSL",
                  "sasl": {"mechanism": "SCRAM-SHA-512", "username": "ecst", "password": "${KAFKA_PW}"},
                  "ssl": {"cafile": security.cafile}},
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "topics": [capture.topic],
    })
    for args, env in (
            (["consume", "-c", str(config), "--until-caught-up"], {"KAFKA_PW": WRONG}),
            (["rebootstrap", "replay", "--state-url", f"sqlite:///{tmp_path / 'state.db'}", "--topic",
              capture.topic], env_for(settings, WRONG))):
        r = cli.ecst(*args, env=env, timeout=120)
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith(f"Error: Kafka at {settings.bootstrap_servers} refused SASL "
                                   "authentication for user 'ecst' (SCRAM-SHA-512"), lines[0]
        assert "check kafka.sasl.username and kafka.sasl.password" in lines[0]
        assert "Traceback" not in r.stderr and WRONG not in r.stdout + r.stderr

    # the right password but no CA: the broker's certificate is not trusted, and the line says so
    doc = cli.yaml.safe_load(config.read_text())
    del doc["kafka"]["ssl"]
    r = cli.ecst("consume", "-c", str(cli.write(tmp_path / "no-ca.yaml", doc)), "--until-caught-up",
                 env={"KAFKA_PW": security.password.reveal()}, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        f"Error: TLS handshake with Kafka at {settings.bootstrap_servers} failed (self-signed certificate "
        "in certificate chain): check kafka.ssl.cafile (the CA that signed the brokers' certificates, none "
        "given: the system's CAs are used) and kafka.ssl.check_hostname"], r.stderr


def test_the_dead_letter_producer_and_the_signal_producer_go_through_sasl_ssl(secure, stack):
    import uuid

    from ecst.connectors import signals
    from ecst.consumer.deadletter import DeadLetters
    from ecst.consumer.events import Record
    from ecst.consumer.metrics import Metrics
    from ecst.demo import delete_topics

    settings, _ = secure
    uid = uuid.uuid4().hex[:10]
    dlq, signal_topic = f"dlq-{uid}", f"signals-{uid}"
    letters = DeadLetters(settings, dlq, Metrics())
    try:
        # each topic is created, and its record confirmed, through the secure listener only
        letters.send([(Record("t", 0, 7, b"k", b"not json"), "cannot decode")], "decode")
        signal = signals.SnapshotSignal(signals.new_signal_id(), ("public.t",))
        signals.send_via_kafka(settings, signal_topic, "t", signal)
        ends = kafka.topic_offsets(settings, [dlq, signal_topic])[1]
        assert ends == {(dlq, 0): 1, (signal_topic, 0): 1}
    finally:
        letters.close()
        delete_topics(stack.bootstrap, [dlq, signal_topic])

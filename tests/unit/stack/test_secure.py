"""The secure profile's files and broker settings: made once with openssl in an owner-only folder,
a SASL_SSL listener added beside PLAINTEXT (never instead of it), the password never printed.
openssl is what the profile needs: without it these tests fail, as `ecst stack up --secure` would."""

import stat

from ecst.settings import Settings
from ecst.stack.local import LocalStack
from ecst.stack.secure import SecureListener


def test_enable_makes_the_ca_keystore_and_password_once(tmp_path):
    listener = SecureListener(tmp_path, 29094)
    assert not listener.enabled
    assert listener.enable() is True
    assert listener.enabled and listener.cafile.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(listener.dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in listener.dir.iterdir()) == [
        "broker.crt", "broker.key", "broker.p12", "ca.crt", "ca.key", "secure.json"]
    password = listener.password.reveal()
    assert listener.enable() is False and listener.password.reveal() == password  # kept
    sec = listener.security()
    assert (sec.protocol, sec.mechanism, sec.username, sec.cafile) == (
        "SASL_SSL", "SCRAM-SHA-512", "ecst", str(listener.cafile))
    assert sec.check() is sec
    assert listener.disable() is True and not listener.enabled


def test_the_broker_keeps_plaintext_and_adds_the_sasl_ssl_listener(tmp_path):
    stack = LocalStack(Settings(home=tmp_path, kafka_port=29092, controller_port=29093,
                                kafka_secure_port=29094))
    plain = stack.kafka._config_text()
    assert "listeners=PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093\n" in plain
    stack.kafka.secure.enable()
    text = stack.kafka._config_text()
    assert ("listeners=PLAINTEXT://127.0.0.1:29092,SASL_SSL://127.0.0.1:29094,CONTROLLER://127.0.0.1:29093\n"
            in text)
    assert "inter.broker.listener.name=PLAINTEXT\n" in text
    assert "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN\n" in text
    assert f"listener.name.sasl_ssl.ssl.keystore.location={stack.kafka.secure.keystore}\n" in text
    # the status names both listeners; `env --secure` points clients at the secure one, no password
    lines = stack.secure_env_lines()
    assert "export ECST_BOOTSTRAP_SERVERS=127.0.0.1:29094" in lines
    assert "export ECST_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in lines
    assert not any(stack.kafka.secure.password.reveal() in line for line in lines)
    assert any(line.startswith("export ECST_KAFKA_SASL_PASSWORD=") for line in
               stack.secure_env_lines(password=True))


def test_a_running_broker_is_restarted_only_when_the_profile_changed(tmp_path, monkeypatch):
    from ecst.stack.kafka import KafkaBroker

    stack = LocalStack(Settings(home=tmp_path, kafka_port=29092, controller_port=29093,
                                kafka_secure_port=29094))
    monkeypatch.setattr(KafkaBroker, "pid", property(lambda self: 4242))  # "running"
    stack.kafka._config()  # started without the profile
    assert not stack.kafka.needs_restart()
    stack.kafka.config_file.write_text(stack.kafka.config_file.read_text() + "num.partitions=3\n")
    assert not stack.kafka.needs_restart()  # other settings: reused, as before
    stack.kafka.secure.enable()
    assert stack.kafka.needs_restart()  # the profile turned on: its listener is missing
    stack.kafka._config()
    assert not stack.kafka.needs_restart()
    stack.kafka.secure.disable()
    assert stack.kafka.needs_restart()  # turned off: its listener must go

"""How ecst's Kafka clients authenticate and encrypt: one `KafkaSecurity`, given to every client.

    kafka:
      security_protocol: SASL_SSL          # PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
      sasl:
        mechanism: SCRAM-SHA-512           # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
        username: users-service
        password: ${KAFKA_PASSWORD}        # a Secret: masked in every log line, error and repr
      ssl:
        cafile: /etc/ecst/kafka-ca.crt     # PEM; default: the system's trusted CAs
        certfile: /etc/ecst/client.crt     # a client certificate (mutual TLS), with its keyfile
        keyfile: /etc/ecst/client.key
        check_hostname: true

Every key also comes from an `ECST_KAFKA_*` variable (`ENV`) or a CLI option (`--kafka-*`, the
password only from ECST_KAFKA_SASL_PASSWORD), which override the file. Each value is checked
when it is read (`KafkaSecurity(...)`); whether the whole is complete (SASL needs a username and
a password, the files exist) when a client is about to be built (`check`), so that a password
may come from the environment while the rest comes from the file. `kafka_python_options` and
`confluent_options` are the same settings in each client library's words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ecst.exceptions import ConfigError
from ecst.settings import Secret

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# field -> (YAML key under `kafka:`, environment variable, CLI option or None)
KEYS = {
    "protocol": ("kafka.security_protocol", "ECST_KAFKA_SECURITY_PROTOCOL", "--kafka-security-protocol"),
    "mechanism": ("kafka.sasl.mechanism", "ECST_KAFKA_SASL_MECHANISM", "--kafka-sasl-mechanism"),
    "username": ("kafka.sasl.username", "ECST_KAFKA_SASL_USERNAME", "--kafka-sasl-username"),
    "password": ("kafka.sasl.password", "ECST_KAFKA_SASL_PASSWORD", None),
    "cafile": ("kafka.ssl.cafile", "ECST_KAFKA_SSL_CAFILE", "--kafka-ssl-cafile"),
    "certfile": ("kafka.ssl.certfile", "ECST_KAFKA_SSL_CERTFILE", "--kafka-ssl-certfile"),
    "keyfile": ("kafka.ssl.keyfile", "ECST_KAFKA_SSL_KEYFILE", "--kafka-ssl-keyfile"),
    "check_hostname": ("kafka.ssl.check_hostname", "ECST_KAFKA_SSL_CHECK_HOSTNAME", None),
}
ENV = {name: var for name, (_key, var, _option) in KEYS.items()}
_FILES = {"cafile": "the CA certificate (PEM) that signed the brokers' certificates",
          "certfile": "this client's certificate (PEM)", "keyfile": "this client's private key (PEM)"}


def named(name: str) -> str:
    """How an error names a field: its YAML key, then its variable (and option)."""
    key, var, option = KEYS[name]
    return f"{key} ({option + ', ' if option else ''}{var})"


@dataclass(frozen=True)
class KafkaSecurity:
    """Security settings every Kafka client ecst builds receives; the default is PLAINTEXT."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: Secret | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"{named('protocol')}: {self.protocol!r} is not a security protocol: use "
                              f"{', '.join(PROTOCOLS)}")
        if self.mechanism is not None and self.mechanism not in MECHANISMS:
            raise ConfigError(f"{named('mechanism')}: {self.mechanism!r} is not a SASL mechanism ecst "
                              f"supports: use {', '.join(MECHANISMS)}")
        for name in ("username", "cafile", "certfile", "keyfile"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{named(name)}: expected a non-empty string, got {value!r}")
        if self.password is not None and not isinstance(self.password, Secret):
            raise ConfigError(f"{named('password')}: expected a string")
        if not isinstance(self.check_hostname, bool):
            raise ConfigError(f"{named('check_hostname')}: expected true or false, "
                              f"got {self.check_hostname!r}")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def ssl(self) -> bool:
        return self.protocol.endswith("SSL")

    def check(self) -> KafkaSecurity:
        """This, if it is complete and its files can be read; else a ConfigError naming the key
        and saying what to do."""
        sasl_given = [n for n in ("mechanism", "username", "password") if getattr(self, n) is not None]
        if self.sasl:
            for name, what in (("mechanism", f"one of {', '.join(MECHANISMS)}"),
                               ("username", "the SASL user"), ("password", "the SASL user's password")):
                if getattr(self, name) is None:
                    raise ConfigError(f"{named(name)} is missing: {self.protocol} needs {what}")
        elif sasl_given:
            raise ConfigError(f"{named(sasl_given[0])} is set but {KEYS['protocol'][0]} is {self.protocol}: "
                              "use SASL_SSL (or SASL_PLAINTEXT) to authenticate with SASL, or remove "
                              "the kafka.sasl settings")
        ssl_given = [n for n in _FILES if getattr(self, n) is not None]
        if ssl_given and not self.ssl:
            raise ConfigError(f"{named(ssl_given[0])} is set but {KEYS['protocol'][0]} is {self.protocol}: "
                              "use SSL or SASL_SSL to connect with TLS, or remove the kafka.ssl settings")
        if (self.certfile is None) != (self.keyfile is None):
            given, missing = ("certfile", "keyfile") if self.keyfile is None else ("keyfile", "certfile")
            raise ConfigError(f"{named(given)} is set without {KEYS[missing][0]}: a client certificate "
                              "needs both the certificate and its private key")
        for name in ssl_given:
            path = str(getattr(self, name))
            if not os.path.isfile(path):
                raise ConfigError(f"{named(name)}: {path} does not exist or is not a file: give the path "
                                  f"of {_FILES[name]}")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{named(name)}: {path} cannot be read by this user: fix its "
                                  "permissions, or give a copy this user may read")
        return self

    def with_(self, **changes: Any) -> KafkaSecurity:
        """A copy with the non-None `changes` (checked as the constructor checks)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def kafka_python_options(self) -> dict[str, Any]:
        """kafka-python's keyword arguments (KafkaConsumer, KafkaProducer, KafkaAdminClient)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl:
            options.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password.reveal() if self.password else None)
        if self.ssl:
            options["ssl_check_hostname"] = self.check_hostname
            for name in _FILES:
                if getattr(self, name) is not None:
                    options[f"ssl_{name}"] = getattr(self, name)
        return options

    def confluent_options(self) -> dict[str, Any]:
        """librdkafka's configuration (confluent-kafka's Consumer and Producer)."""
        options: dict[str, Any] = {"security.protocol": self.protocol}
        if self.sasl:
            options.update({"sasl.mechanisms": self.mechanism, "sasl.username": self.username,
                            "sasl.password": self.password.reveal() if self.password else None})
        if self.ssl:
            options["ssl.endpoint.identification.algorithm"] = "https" if self.check_hostname else "none"
            for name, key in (("cafile", "ssl.ca.location"), ("certfile", "ssl.certificate.location"),
                              ("keyfile", "ssl.key.location")):
                if getattr(self, name) is not None:
                    options[key] = getattr(self, name)
        return options

    def describe(self) -> str:
        """One phrase for messages: `SASL_SSL, SCRAM-SHA-512 as 'ecst'` (never the password)."""
        if self.sasl:
            return f"{self.protocol}, {self.mechanism} as {self.username!r}"
        return self.protocol


def parse_bool(value: Any, name: str) -> bool:
    """true/false (or yes/no, 1/0 from a variable), else a ConfigError naming `name`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise ConfigError(f"{named(name)}: expected true or false, got {value!r}")


def from_values(values: Mapping[str, Any], base: KafkaSecurity | None = None) -> KafkaSecurity:
    """`base` (default: PLAINTEXT) with the non-None `values` (field -> raw value) over it."""
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name not in KEYS:
            raise ConfigError(f"unknown Kafka security setting {name!r}: use {', '.join(KEYS)}")
        if name == "password":
            value = value if isinstance(value, Secret) else Secret(str(value))
        elif name == "check_hostname":
            value = parse_bool(value, name)
        elif name == "protocol" and isinstance(value, str):
            value = value.strip().upper()
        elif name == "mechanism" and isinstance(value, str):
            value = value.strip().upper()
        changes[name] = value
    return (base or KafkaSecurity()).with_(**changes)


def from_env(environ: Mapping[str, str] | None = None, base: KafkaSecurity | None = None) -> KafkaSecurity:
    """`base` with the `ECST_KAFKA_*` variables that are set (and not empty) over it."""
    environ = os.environ if environ is None else environ
    return from_values({name: environ.get(var) or None for name, var in ENV.items()}, base)

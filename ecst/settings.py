"""The one settings object of a process: defaults, environment (`ECST_*`) and CLI overrides.

Build it once with `Settings.from_env()` at the edge (the CLI, a test fixture) and pass it down.
Secrets are `Secret` values, which never print their content; URLs print with the password masked.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ecst.exceptions import ConfigError

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://")
_QUERY_PASSWORD = re.compile(r"[?&]password=(?P<pw>[^&\s]*)", re.IGNORECASE)


_KNOWN_SECRETS: set[str] = set()  # every Secret's value, for the log filter


class Secret:
    """A value that prints as `***`; call `reveal()` where the real value is needed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        """The secret itself: pass it to a driver, never to a printer or logger."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def register_secret(value: str) -> None:
    """Make `redact` (and so every log line and error message) mask this value."""
    for part in _secret_parts(value):
        _KNOWN_SECRETS.add(part)


def _secret_parts(value: str) -> list[str]:
    """The value itself, or for a URL its password (none: nothing to hide, so that a message can
    name e.g. a SQLite state file): each long enough not to mask innocent words."""
    m = _URL_PASSWORD.search(value)
    if m:
        parts = [m["pw"]]
    elif _URL.match(value):
        parts = []
    else:
        parts = [value]
    parts += [q["pw"] for q in _QUERY_PASSWORD.finditer(value)]
    return [p for p in parts if len(p) >= 6]


def redact(text: str) -> str:
    """`text` with URL passwords and every known Secret value replaced by `***`."""
    text = mask_url(text)
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that applies `redact` to every record, whatever logger made it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def mask_url(url: str) -> str:
    """Return `url` with any password replaced by `***` (`postgresql://u:***@h/db`)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", url)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


def check_log_level(value: str, name: str) -> str:
    """A log level name (any case), else a ConfigError naming `name` (a variable or an option)."""
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name}={value!r}: not a log level: use one of {', '.join(LOG_LEVELS)}")
    return level


def check_log_format(value: str, name: str) -> str:
    """`text` or `json` (any case), else a ConfigError naming `name`."""
    fmt = value.strip().lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"{name}={value!r}: not a log format: use text or json (one JSON object a line)")
    return fmt


_CHECKS = {"log_level": check_log_level, "log_format": check_log_format}


def _project_dir() -> Path:
    """The checkout that holds `deploy/pom.xml`: ECST_PROJECT_DIR, else this package's parent."""
    env = os.environ.get("ECST_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about where things are. Immutable; use `replace()`."""

    home: Path = field(default_factory=lambda: Path(".ecst").resolve())
    project_dir: Path = field(default_factory=_project_dir)
    pg_port: int = 55432
    kafka_port: int = 19092
    controller_port: int = 19093
    kafka_secure_port: int = 19094  # the secure profile's SASL_SSL listener (`ecst stack up --secure`)
    connect_port: int = 18083
    connect_url: str | None = None
    bootstrap_servers: str | None = None
    producer_url: Secret | None = None
    state_url: Secret | None = None
    group_id: str = "ecst-consumer"
    # None: the command's own default (`ecst consume`: INFO, the others: WARNING); see ecst.logs
    log_level: str | None = None
    log_format: str = "text"

    # Environment variable for each field; the value is parsed with the field's type.
    ENV = {
        "home": "ECST_HOME",
        "pg_port": "ECST_PG_PORT",
        "kafka_port": "ECST_KAFKA_PORT",
        "controller_port": "ECST_CONTROLLER_PORT",
        "kafka_secure_port": "ECST_KAFKA_SECURE_PORT",
        "connect_port": "ECST_CONNECT_PORT",
        "connect_url": "ECST_CONNECT_URL",
        "bootstrap_servers": "ECST_BOOTSTRAP_SERVERS",
        "producer_url": "ECST_PRODUCER_URL",
        "state_url": "ECST_STATE_URL",
        "group_id": "ECST_GROUP_ID",
        "log_level": "ECST_LOG_LEVEL",
        "log_format": "ECST_LOG_FORMAT",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `ECST_*` variables, then non-None keyword overrides (CLI options)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, var in cls.ENV.items():
            raw = environ.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _parse(name, var, raw, str(types[name]))
        for name, value in overrides.items():
            if value is None:
                continue
            if name not in types:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _parse(name, "option", value, str(types[name])) if isinstance(
                value, str
            ) else value
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def effective_connect_url(self) -> str:
        """The Kafka Connect REST URL: ECST_CONNECT_URL, else the local stack's."""
        return (self.connect_url or f"http://127.0.0.1:{self.connect_port}").rstrip("/")

    @property
    def effective_bootstrap_servers(self) -> str:
        """Kafka bootstrap servers: ECST_BOOTSTRAP_SERVERS, else the local stack's broker."""
        return self.bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    def describe(self) -> dict[str, str]:
        """Every setting as printable text, secrets masked."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                out[f.name] = mask_url(value.reveal()) if "://" in value.reveal() else MASK
            else:
                out[f.name] = "" if value is None else str(value)
        return out


def _parse(name: str, var: str, raw: str, type_name: str) -> Any:
    if name in _CHECKS:
        return _CHECKS[name](raw, var)
    if "Secret" in type_name:
        return Secret(raw)
    if "Path" in type_name:
        return Path(raw).expanduser().resolve()
    if type_name.startswith("int"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: {name} must be an integer") from None
    return raw

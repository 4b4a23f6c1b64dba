"""Connector definitions: one YAML file per connector, validated before anything is sent.

    name: users                      # the connector's name in Kafka Connect
    config:                          # the connector config, values as YAML scalars
      connector.class: io.debezium.connector.postgresql.PostgresConnector
      database.password: ${env:ECST_CONNECTOR_PASSWORD}   # resolved by the Connect worker
      topic.prefix: ${TOPIC_PREFIX:-producer}             # resolved here, from the environment
    secrets: [some.extra.key]        # optional: more keys to mask in every output

`${VAR}` and `${VAR:-default}` are replaced from the environment when the file is loaded.
Kafka Connect config-provider references such as `${env:VAR}` or `${file:path:key}` are left
untouched for the worker to resolve.

Per-environment overlays live beside the definitions, in `env/<name>.yaml`, keyed by connector
name; `--env prod` merges `connectors/env/prod.yaml` over the base files (a null value removes
a key):

    users:
      config:
        heartbeat.interval.ms: 5000
        snapshot.mode: null
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecst.exceptions import DefinitionError
from ecst.settings import MASK
from ecst.yamlfile import read_yaml

TOP_LEVEL_KEYS = {"name": "the connector's name", "config": "the connector config (a mapping)",
                  "secrets": "a list of extra config keys to mask"}
REQUIRED_CONFIG = ("connector.class",)
# What a Debezium Postgres connector cannot run without, and keys that must be integers.
POSTGRES_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
REQUIRED_BY_CLASS = {
    POSTGRES_CLASS: ("database.hostname", "database.dbname", "database.user", "topic.prefix"),
}
INTEGER_KEYS = ("tasks.max", "database.port", "heartbeat.interval.ms", "snapshot.fetch.size",
                "incremental.snapshot.chunk.size", "max.batch.size", "max.queue.size", "poll.interval.ms",
                "topic.creation.default.partitions", "topic.creation.default.replication.factor")
_REFERENCE = re.compile(r"\$\{[^}]+\}")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)
_PROVIDER_ONLY = re.compile(r"\$\{[a-z]+:[^}]*\}")


@dataclass(frozen=True)
class ConnectorDefinition:
    """A validated connector: its name, its config as strings, and which keys are secret."""

    name: str
    config: dict[str, str]
    source: Path | None = None
    extra_secrets: frozenset[str] = field(default_factory=frozenset)

    def is_secret(self, key: str) -> bool:
        return key in self.extra_secrets or bool(_SECRET_KEY.search(key))

    def masked(self, config: Mapping[str, str] | None = None) -> dict[str, str]:
        """The config (or another one of this connector) with every secret value masked."""
        return mask_config(config or self.config, self.extra_secrets)


def mask_config(config: Mapping[str, str], extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """A config with the value of every secret-looking key (password, secret, token) masked;
    config-provider references (`${env:…}`) are not secrets and stay readable."""
    def secret(k: str, v: str) -> bool:
        return (k in extra or bool(_SECRET_KEY.search(k))) and not _PROVIDER_ONLY.fullmatch(v or "")

    return {k: (MASK if secret(k, v) else v) for k, v in config.items()}


def _where(path: Path | None) -> str:
    return str(path) if path else "<definition>"


def interpolate(value: str, environ: Mapping[str, str], where: str) -> str:
    """Replace `${VAR}` / `${VAR:-default}` from `environ`; leave `${provider:...}` alone."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise DefinitionError(
            f"{where}: environment variable {name} is not set: export it, "
            f"or give a default with ${{{name}:-value}}"
        )

    return _VAR.sub(sub, value)


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)
    raise DefinitionError(
        f"{where}: expected a string, number, boolean or list of them, got {type(value).__name__}"
        + (" (null)" if value is None else "")
    )


def parse_definition(
    doc: Any, source: Path | None = None, environ: Mapping[str, str] | None = None
) -> ConnectorDefinition:
    """Validate a parsed YAML document and build the definition."""
    environ = os.environ if environ is None else environ
    where = _where(source)
    if not isinstance(doc, dict):
        raise DefinitionError(f"{where}: expected a mapping with keys name and config")
    unknown = sorted(set(doc) - set(TOP_LEVEL_KEYS))
    if unknown:
        allowed = ", ".join(f"{k} ({v})" for k, v in TOP_LEVEL_KEYS.items())
        raise DefinitionError(f"{where}: unknown top-level key {unknown[0]!r}; allowed: {allowed}")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(f"{where}: key 'name' is required and must be a non-empty string")
    name = interpolate(name, environ, f"{where}: name")
    config = doc.get("config")
    if not isinstance(config, dict) or not config:
        raise DefinitionError(f"{where}: key 'config' is required and must be a mapping")
    out: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise DefinitionError(f"{where}: config key {key!r} must be a string")
        text = _scalar(value, f"{where}: config.{key}")
        out[key] = interpolate(text, environ, f"{where}: config.{key}")
    for key in (*REQUIRED_CONFIG, *REQUIRED_BY_CLASS.get(out.get("connector.class", ""), ())):
        if not out.get(key):
            what = "" if key in REQUIRED_CONFIG else f" by {out['connector.class'].rsplit('.', 1)[-1]}"
            raise DefinitionError(f"{where}: config.{key} is required{what}")
    for key in INTEGER_KEYS:
        value = out.get(key)
        if value is not None and not _REFERENCE.search(value):
            try:
                int(value)
            except ValueError:
                raise DefinitionError(f"{where}: config.{key} must be an integer, got {value!r}") from None
    if "name" in out and out["name"] != name:
        raise DefinitionError(f"{where}: config.name {out['name']!r} differs from name {name!r}")
    out.pop("name", None)
    extra = doc.get("secrets") or []
    if not isinstance(extra, list) or not all(isinstance(k, str) for k in extra):
        raise DefinitionError(f"{where}: key 'secrets' must be a list of config keys")
    return ConnectorDefinition(name=name, config=out, source=source, extra_secrets=frozenset(extra))


def load_definition(path: Path | str, environ: Mapping[str, str] | None = None,
                    overlay: Mapping[str, Any] | None = None) -> ConnectorDefinition:
    """Read and validate one connector YAML file, with an environment overlay merged over it."""
    path = Path(path)
    doc = read_yaml(path, DefinitionError)
    if overlay is not None and isinstance(doc, dict) and doc.get("name") in overlay:
        doc = _merge(doc, overlay[doc["name"]])
    return parse_definition(doc, path, environ)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_overlay(folder: Path, env: str) -> dict[str, Any]:
    """`<folder>/env/<env>.yaml`: connector name -> {config: {...}} merged over the base."""
    path = folder / "env" / f"{env}.yaml"
    if not path.exists():
        raise DefinitionError(f"{path}: no overlay for environment {env!r} (create it, or drop --env)")
    doc = read_yaml(path, DefinitionError) or {}
    if not isinstance(doc, dict):
        raise DefinitionError(f"{path}: expected a mapping of connector name to overrides")
    for name, over in doc.items():
        if not isinstance(over, dict) or set(over) - {"config", "secrets"}:
            raise DefinitionError(f"{path}: {name}: expected a mapping with config (and secrets)")
        if "config" in over and not isinstance(over["config"], dict):
            raise DefinitionError(f"{path}: {name}.config: expected a mapping of config keys")
    return doc


def load_definitions(paths: list[Path | str], environ: Mapping[str, str] | None = None,
                     env: str | None = None) -> list[ConnectorDefinition]:
    """Load files and folders (every *.yaml / *.yml directly inside); names must be unique.
    With `env`, the overlay `env/<env>.yaml` of each folder is merged over its definitions."""
    files: list[tuple[Path, Path]] = []  # (file, folder holding its overlays)
    for p in map(Path, paths):
        if p.is_dir():
            files += [(x, p) for x in sorted(p.iterdir()) if x.suffix in (".yaml", ".yml") and x.is_file()]
        else:
            files.append((p, p.parent))
    overlays = {folder: load_overlay(folder, env) for _, folder in files} if env else {}
    defs = [load_definition(f, environ, overlays.get(folder)) for f, folder in files]
    seen: dict[str, Path | None] = {}
    for d in defs:
        if d.name in seen:
            raise DefinitionError(f"{d.source}: connector name {d.name!r} is also used by {seen[d.name]}")
        seen[d.name] = d.source
    for folder, overlay in overlays.items():
        unknown = sorted(set(overlay) - {d.name for d in defs})
        if unknown:
            raise DefinitionError(f"{folder / 'env' / f'{env}.yaml'}: no connector named {unknown[0]!r} "
                                  f"in {folder}")
    return defs

"""Connector definitions rendered as Strimzi `KafkaConnector` resources (kafka.strimzi.io/v1 by
default, v1beta2 for operators older than Strimzi 0.49), so the same reviewed YAML drives a
Kubernetes cluster. `${env:VAR}` references stay as they are: the `KafkaConnect` resource
(deploy/strimzi/kafka-connect.yaml) enables the env config provider and maps the variables from
Kubernetes Secrets."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ecst.connectors.definition import ConnectorDefinition
from ecst.exceptions import ConfigError, DefinitionError

GROUP = "kafka.strimzi.io"
# v1: Strimzi 0.49 and later (the only one Strimzi 1.0 serves); v1beta2: older operators.
API_VERSIONS = ("v1", "v1beta2")
DEFAULT_API_VERSION = "v1"
API_VERSION = f"{GROUP}/{DEFAULT_API_VERSION}"
# Strimzi sets these from spec fields; config must not carry them.
RESERVED = ("connector.class", "tasks.max", "name")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def api_version(version: str) -> str:
    """The resources' apiVersion for `version` (v1 or v1beta2); a ConfigError for anything else."""
    if version not in API_VERSIONS:
        raise ConfigError(f"--api-version {version!r}: Strimzi serves {GROUP}/v1 (Strimzi 0.49 and later, "
                          "the only version of Strimzi 1.0) or v1beta2 (older operators): use v1 or v1beta2")
    return f"{GROUP}/{version}"


def kafka_connector(definition: ConnectorDefinition, cluster: str, namespace: str | None = None,
                    version: str = DEFAULT_API_VERSION) -> dict[str, Any]:
    """One KafkaConnector resource for a definition, labelled for the KafkaConnect `cluster`. Its
    spec is the same in v1 and v1beta2: `state` (both) rather than `pause` (v1beta2 only)."""
    api = api_version(version)
    if not _DNS1123.match(definition.name):
        raise DefinitionError(
            f"{definition.source}: name {definition.name!r} is not a valid Kubernetes resource name "
            "(lower-case letters, digits, '-' and '.'): rename the connector to render it for Strimzi")
    config = definition.config
    try:
        tasks_max = int(config.get("tasks.max", "1"))
    except ValueError:
        raise DefinitionError(f"{definition.source}: config.tasks.max must be an integer") from None
    metadata: dict[str, Any] = {"name": definition.name, "labels": {"strimzi.io/cluster": cluster}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": api,
        "kind": "KafkaConnector",
        "metadata": metadata,
        "spec": {
            "class": config["connector.class"],
            "tasksMax": tasks_max,
            "autoRestart": {"enabled": True},
            "state": "running",
            "config": {k: _typed(v) for k, v in sorted(config.items()) if k not in RESERVED},
        },
    }


def _typed(value: str) -> Any:
    """Connect accepts strings; Strimzi's config map is friendlier with YAML scalars."""
    if value in ("true", "false"):
        return value == "true"
    if re.fullmatch(r"-?\d{1,18}", value):
        return int(value)
    return value


def render(definitions: list[ConnectorDefinition], cluster: str, namespace: str | None = None,
           version: str = DEFAULT_API_VERSION) -> str:
    """A multi-document YAML stream of KafkaConnector resources."""
    api_version(version)  # refused before anything is rendered, even with no definitions
    docs = [kafka_connector(d, cluster, namespace, version) for d in definitions]
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)

"""Connector definitions rendered as Strimzi `KafkaConnector` resources (kafka.strimzi.io/v1beta2),
so the same reviewed YAML drives a Kubernetes cluster. `${env:VAR}` references stay as they are:
the `KafkaConnect` resource (deploy/strimzi/kafka-connect.yaml) enables the env config provider
and maps the variables from Kubernetes Secrets."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ecst.connectors.definition import ConnectorDefinition
from ecst.exceptions import DefinitionError

API_VERSION = "kafka.strimzi.io/v1beta2"
# Strimzi sets these from spec fields; config must not carry them.
RESERVED = ("connector.class", "tasks.max", "name")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def kafka_connector(definition: ConnectorDefinition, cluster: str,
                    namespace: str | None = None) -> dict[str, Any]:
    """One KafkaConnector resource for a definition, labelled for the KafkaConnect `cluster`."""
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
        "apiVersion": API_VERSION,
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


def render(definitions: list[ConnectorDefinition], cluster: str, namespace: str | None = None) -> str:
    """A multi-document YAML stream of KafkaConnector resources."""
    docs = [kafka_connector(d, cluster, namespace) for d in definitions]
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)

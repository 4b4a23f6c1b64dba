"""Validating resources against a CustomResourceDefinition's openAPIV3Schema with jsonschema, the
way the API server does with strict field validation (kubectl's default): a field the schema does
not declare is an error, except under `x-kubernetes-preserve-unknown-fields`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).parent / "crds"


def _strict(schema: Any) -> Any:
    """additionalProperties: false on every structural object schema; the branches of oneOf/anyOf/
    allOf/not only constrain (Kubernetes allows no new fields in them), so they are left as they are."""
    if isinstance(schema, dict):
        out = {k: v if k in ("oneOf", "anyOf", "allOf", "not") else _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    return schema


def load_crd(name: str) -> dict[str, Any]:
    """A CRD document from tests/unit/connectors/crds/ (the first document of the file)."""
    return next(d for d in yaml.safe_load_all((CRDS / name).read_text()) if d)


def served_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The strict schema of a served version; KeyError when the CRD does not serve it."""
    for v in crd["spec"]["versions"]:
        if v["name"] == version and v.get("served"):
            return _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    raise KeyError(f"{crd['metadata']['name']} does not serve {version}")


def errors(resource: dict[str, Any], crd: dict[str, Any]) -> list[str]:
    """Why `resource` does not fit the CRD: its group, kind and the served version's schema."""
    group, _, version = resource.get("apiVersion", "").partition("/")
    if group != crd["spec"]["group"] or resource.get("kind") != crd["spec"]["names"]["kind"]:
        return [f"{resource.get('apiVersion')} {resource.get('kind')} is not {crd['metadata']['name']}"]
    try:
        schema = served_schema(crd, version)
    except KeyError as exc:
        return [str(exc)]
    validator = jsonschema.Draft4Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(resource), key=lambda e: list(map(str, e.absolute_path)))]


STRIMZI_CRDS = {"KafkaConnector": "047-Crd-kafkaconnector.yaml",
                "KafkaConnect": "kafkaconnect-v1-derived.yaml"}

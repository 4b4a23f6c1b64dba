"""The part of Kustomize that deploy/k8s uses, in Python, so the overlays are built and checked without
kubectl: `resources` (files and folders with a kustomization.yaml), `labels` (pairs on metadata
only), `namespace`, and `patches` given by `path` as strategic merge patches (maps merge; for built-in
kinds, lists of named items merge by name; other lists, and every list of a custom resource, are
replaced; null deletes). Anything else in a kustomization.yaml is refused, so that an overlay using
more than this is noticed rather than built wrong."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "patches", "labels"}
BUILTIN_GROUPS = {"", "apps", "policy", "batch", "networking.k8s.io", "autoscaling",
                  "rbac.authorization.k8s.io"}
MERGE_BY_NAME = {"containers", "initContainers", "env", "volumes", "volumeMounts", "ports"}


def _group(obj: dict[str, Any]) -> str:
    api = obj["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(group, kind, name): what a patch is matched by, and what names an object in a build."""
    return _group(obj), obj["kind"], obj["metadata"]["name"]


def merge(target: Any, patch: Any, builtin: bool, field: str = "") -> Any:
    """`patch` merged over `target` the way a strategic merge patch does for what deploy/k8s uses."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(out[k], v, builtin, k) if k in out else copy.deepcopy(v)
        return out
    if (builtin and field in MERGE_BY_NAME and isinstance(target, list) and isinstance(patch, list)
            and all(isinstance(i, dict) and "name" in i for i in target + patch)):
        out_list = [dict(i) for i in target]
        names = [i["name"] for i in out_list]
        for item in patch:
            if item["name"] in names:
                n = names.index(item["name"])
                out_list[n] = merge(out_list[n], item, builtin)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def build(folder: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize folder` prints (in another order)."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise ValueError(f"{folder}: kustomization keys this subset does not implement: {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = folder / res
        if path.is_dir():
            objects += build(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for entry in k.get("patches", []):
        if set(entry) != {"path"}:
            raise ValueError(f"{folder}: only patches given by path are implemented: {entry}")
        patch = yaml.safe_load((folder / entry["path"]).read_text())
        matches = [i for i, o in enumerate(objects) if key(o) == key(patch)]
        if len(matches) != 1:
            raise ValueError(f"{folder}: patch {entry['path']} matches {len(matches)} objects")
        [i] = matches
        objects[i] = merge(objects[i], patch, _group(patch) in BUILTIN_GROUPS)
    for entry in k.get("labels", []):
        if set(entry) - {"pairs"}:
            raise ValueError(f"{folder}: only labels.pairs (metadata labels) is implemented: {entry}")
        for o in objects:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    if "namespace" in k:
        for o in objects:
            o["metadata"]["namespace"] = k["namespace"]
    return objects

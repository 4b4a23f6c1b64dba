"""The monitoring files under deploy/monitoring/, and the PromQL expressions they hold."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "ecst-rules.yaml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yaml"))
DASHBOARD = MONITORING / "ecst-dashboard.json"
EXTERNAL = MONITORING / "external-metrics.txt"
RUNBOOK = ROOT / "docs" / "runbook.md"
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.S)


def rules() -> list[dict[str, Any]]:
    """Every rule of ecst-rules.yaml, with its group's name under `group`."""
    doc = yaml.safe_load(RULES.read_text())
    return [{**rule, "group": g["name"]} for g in doc["groups"] for rule in g["rules"]]


def dashboard_panels(panels: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The dashboard's panels, those inside rows included."""
    if panels is None:
        panels = json.loads(DASHBOARD.read_text())["panels"]
    out: list[dict[str, Any]] = []
    for p in panels:
        out.append(p)
        out += dashboard_panels(p.get("panels", []))
    return out


def dashboard_expressions() -> dict[str, str]:
    """Where -> PromQL, for every panel target and every query variable (label_values' first argument)."""
    exprs = {f"panel {p['title']!r} {t['refId']}": t["expr"]
             for p in dashboard_panels() for t in p.get("targets", [])}
    for var in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = _LABEL_VALUES.match(query)
            exprs[f"variable {var['name']}"] = m.group(1) if m else query
    return exprs


def rule_expressions() -> dict[str, str]:
    """Alert name -> PromQL."""
    return {f"rule {r['alert']}": r["expr"] for r in rules()}


def external_metrics() -> set[str]:
    """The names external-metrics.txt lists (one a line; `#` starts a comment)."""
    lines = (line.split("#", 1)[0].strip() for line in EXTERNAL.read_text().splitlines())
    return {line for line in lines if line}


def promtool(*args: str, stdin: str | None = None) -> str:
    """promtool's output; the calling test fails when it fails, or is missing."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: install it with `make promtool` (apt-get install prometheus, "
                    "as root), then re-run", pytrace=False)
    result = subprocess.run([exe, *args], cwd=ROOT, input=stdin, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout

"""docs/reliability.md and docs/reliability.json, written by the fault suite at the end of a run
(never by hand): one entry per scenario, the figures of this run, the date and the commit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import subprocess
from pathlib import Path

from tests.faults.harness import Outcome, size

DOCS = Path(__file__).resolve().parents[2] / "docs"
FIELDS = ("scenario", "faults_injected", "recovered", "rows_compared", "mismatches", "poison_injected",
          "dead_lettered", "max_lag_s", "recovery_s")


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=DOCS.parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write(outcomes: list[Outcome], docs: Path = DOCS) -> None:
    """Write both files for `outcomes` (the scenarios of this run, in the order they ran)."""
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    commit = _commit()
    run = size()
    entries = [{**dataclasses.asdict(o), "date": date, "commit": commit, "size": run["name"]}
               for o in outcomes]
    (docs / "reliability.json").write_text(json.dumps(entries, indent=2) + "\n")
    lines = [
        "# Reliability: the fault suite's last run",
        "",
        "Written by `make faults` (`tests/faults/`), never by hand. Each scenario runs on the real local",
        "stack while a writer keeps changing users; after the faults, the state is compared with the",
        "producer's table on every column of every row (`mismatches` must be 0).",
        "",
        f"Run: {date}, commit `{commit}`, size `{run['name']}` ({run['rows']} users before the connector,",
        f"{run['rate']} writer transactions/s of 1-3 changes, soak {run['soak_s']} s, state outage",
        f"{run['outage_s']} s), Python {platform.python_version()}, {platform.machine()}.",
        "",
        "| scenario | faults injected | recovered | rows compared | mismatches | poison injected | "
        "dead-lettered | max lag (s) | recovery (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        row = [o.scenario, o.faults_injected, o.recovered, f"{o.rows_compared:,}", o.mismatches,
               o.poison_injected, o.dead_lettered, o.max_lag_s,
               "n/a" if o.recovery_s is None else o.recovery_s]
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "Max lag: the largest delay, measured from outside, between a probe row's commit in the",
              "producer and its arrival in the state (sampled every second). Recovery: for the slowest",
              "fault of the scenario, the seconds from its injection until a change committed after it",
              "was in the state.", ""]
    for o in outcomes:
        faults = ", ".join(sorted(set(o.faults))) or "none"
        lines.append(f"- **{o.scenario}**: {o.duration_s:.0f} s, {o.writes:,} writer transactions; "
                     f"faults: {faults}" + (f". {o.detail}" if o.detail else "."))
    (docs / "reliability.md").write_text("\n".join(lines) + "\n")

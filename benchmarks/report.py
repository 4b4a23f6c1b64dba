"""From one harness run (benchmarks-raw.json's content) to `benchmarks.md`, the charts and
`benchmarks.json` (one entry per issue-12 goal). Pure functions of the run, except `write`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

CHARTS = "bench-charts"  # beside benchmarks.md
# Where a goal is not met, the notes say what bounds it (profiles; benchmark-notes.md)
BOUNDS = "benchmark-notes.md#what-bounds-each-goal"
# The apply scenario's sides (harness.scenario_apply)
SQLITE, PG, SINK = "ecst, SQLite", "ecst, PostgreSQL", "JDBC sink, PostgreSQL"
PG_PYTHON = "ecst, PostgreSQL, decoded in Python"  # decode_in_database: false
CONFLUENT_SQLITE, CONFLUENT_PG = "ecst, SQLite, confluent-kafka", "ecst, PostgreSQL, confluent-kafka"
# The latency scenario's side with the optional client (ecst consume --kafka-client confluent)
LATENCY_CONFLUENT = "ecst, confluent-kafka"
# The bootstrap scenario's sides (harness.scenario_bootstrap)
BOOT_ECST, BOOT_DEBEZIUM = "ecst end to end", "Debezium only"
BOOT_CONFLUENT = "ecst end to end, confluent-kafka"


def medians(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    """The median of `key` per side, sides in the order they first ran."""
    sides: dict[str, list[float]] = {}
    for r in runs:
        if r.get(key) is not None:
            sides.setdefault(r["side"], []).append(r[key])
    return {side: statistics.median(values) for side, values in sides.items()}


def round_ratios(runs: list[dict[str, Any]], key: str, a: str, b: str) -> float | None:
    """The median over rounds of (side a / side b), each round's two runs side by side."""
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        if r.get(key) is not None:
            by_round.setdefault(r["round"], {})[r["side"]] = r[key]
    ratios = [v[a] / v[b] for v in by_round.values() if a in v and b in v and v[b]]
    return statistics.median(ratios) if ratios else None


def _latency(run: dict[str, Any], rate: int, side: str, key: str) -> float | None:
    runs = run["scenarios"].get("latency", {}).get("rates", {}).get(str(rate))
    return medians(runs, key).get(side) if runs else None


def highest_sustained(rates: dict[str, list[dict[str, Any]]]) -> dict[str, int | None]:
    """Per side, the highest rate at which most rounds kept up (None: not even the lowest)."""
    out: dict[str, int | None] = {}
    for rate in sorted(rates, key=int):
        kept = medians(rates[rate], "kept_up")
        for side, k in kept.items():
            out.setdefault(side, None)
            if k >= 0.5:
                out[side] = int(rate)
    return out


def goals(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's goals with the figures of this run; a goal whose scenario did not run (or, in
    a quick run, whose size was not measured) is left out."""
    facts, sc = run["facts"], run["scenarios"]
    out: list[dict[str, Any]] = []

    def goal(name: str, measured: float | None, target: float | None, unit: str, better: str) -> None:
        if measured is None or target is None:
            return
        met = measured >= target if better == "higher" else measured <= target
        out.append({"name": name, "measured": round(measured, 3), "target": round(target, 3), "unit": unit,
                    "better": better, "met": met, "date": facts["date"], "commit": facts["commit"],
                    "quick": run["quick"]})

    if "apply" in sc:
        m = medians(sc["apply"]["runs"], "events_per_s")
        pg, sink = m.get(PG), m.get(SINK)
        goal("apply into PostgreSQL, ecst / JDBC sink (events/s, same run)",
             pg / sink if pg and sink else None, 1.5, "ratio", "higher")
        goal("apply into SQLite", m.get(SQLITE), 50_000, "events/s", "higher")
    if "bootstrap" in sc:
        m = medians(sc["bootstrap"]["runs"], "seconds")
        e, d = m.get(BOOT_ECST), m.get(BOOT_DEBEZIUM)
        goal("bootstrap end to end / Debezium only", e / d if e and d else None, 1.2, "ratio", "lower")
    if "latency" in sc:
        goal("p99 latency at 3,000 changes/s, below the JDBC sink's on the same run",
             _latency(run, 3000, "ecst", "p99_ms"), _latency(run, 3000, "sink", "p99_ms"), "ms", "lower")
        goal("p99 latency at 1,000 changes/s", _latency(run, 1000, "ecst", "p99_ms"), 500, "ms", "lower")
    if "scale" in sc and sc["scale"]["runs"]:
        top = max(sc["scale"]["runs"], key=lambda r: r["rows"])
        goal(f"peak RSS at {top['rows']:,} rows", top["peak_rss_mb"], 150, "MB", "lower")
    return out


# ----- markdown ---------------------------------------------------------------------------------
def _n(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows] + [""])


def _side_table(runs: list[dict[str, Any]], columns: list[tuple[str, str, int]]) -> list[str]:
    per = {key: medians(runs, key) for key, _, _ in columns}
    sides = list(dict.fromkeys(r["side"] for r in runs))
    return _table(["side", *[title for _, title, _ in columns], "rounds"],
                  [[s, *[_n(per[k].get(s), d) for k, _, d in columns],
                    str(sum(1 for r in runs if r["side"] == s))] for s in sides])


def markdown(run: dict[str, Any]) -> str:
    f, sc, sizes = run["facts"], run["scenarios"], run["sizes"]
    v = f["versions"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/harness.py`) from one run; do not edit by hand. Every "
        "comparison ran its sides in turn (A B A B ...) in the same run; the figures are medians over "
        f"{sizes['repeats']} rounds, and the ratios are the figures to read on this noisy machine. "
        "How the figures were found, profiles and earlier measurements: "
        "[benchmark notes](benchmark-notes.md).",
        "",
        *(["**A quick run** (`--quick`, CI size): the sizes are too small for the figures to mean "
           "anything.", ""] if run["quick"] else []),
        f"- run: {f['date']}, commit `{f['commit']}`, {f['duration_s']:,} s in all; "
        f"load average {f['load_average_start'][0]:.2f} at the start, "
        f"{f['load_average_end'][0]:.2f} at the end",
        f"- machine: {f['cpu']}, {f['cores']} cores, {f['memory_gib']} GiB; {f['os']}; Python {f['python']}",
        f"- versions: PostgreSQL {v['postgresql']}, Kafka {v['kafka']}, Debezium {v['debezium']}, "
        f"JDBC sink {v['debezium-connector-jdbc']}, kafka-python {v['kafka-python']}, "
        f"confluent-kafka {v.get('confluent-kafka', '?')}, "
        f"SQLAlchemy {v['SQLAlchemy']}, psycopg {v['psycopg']}, orjson {v['orjson']}",
        "",
        "## Goals",
        "",
    ]
    gs = goals(run)
    def figure(g: dict[str, Any], key: str) -> str:
        return f"{_n(g[key], 2 if g['unit'] == 'ratio' else 0)} {g['unit']}"

    lines += _table(["goal", "measured", "target", "met"],
                    [[g["name"], figure(g, "measured"),
                      f"{'≥' if g['better'] == 'higher' else '≤'} {figure(g, 'target')}",
                      "yes" if g["met"] else f"**no** ([what bounds it]({BOUNDS}))"] for g in gs])
    lines += ["The goals are measured with the consumer's default Kafka client, kafka-python; the apply and "
              "bootstrap scenarios, and the latency scenario at one rate, also run the optional one "
              "(`kafka.client: confluent`).", ""]
    if "apply" in sc:
        a = sc["apply"]
        lines += ["## Apply throughput", "",
                  f"A topic pre-filled by the real connector: the snapshot of {a['rows']:,} users, then "
                  f"one update of each ({a['records']:,} records, 3 partitions), read to its end by each "
                  "side from a new consumer group into a new, empty target. The clock runs from the "
                  "consumer's start (ecst: `Consumer.run`, after imports; the sink: the connector's "
                  "creation) to the last record applied, group join included. Every result was compared "
                  "with the producer's table, every column of every row, after its run (not timed). CPU is "
                  "the consumer process's (ecst) or the Connect worker JVM's during the run (the sink).", ""]
        lines += _side_table(a["runs"], [("events_per_s", "events/s", 0), ("cpu_s_per_1000",
                                                                          "CPU-s per 1,000 events", 3),
                                         ("peak_rss_mb", "peak RSS (MB)", 0)])
        for what, x, y in (("ecst into PostgreSQL / JDBC sink", PG, SINK),
                           ("ecst with confluent-kafka into PostgreSQL / JDBC sink", CONFLUENT_PG, SINK),
                           ("ecst into SQLite, confluent-kafka / kafka-python", CONFLUENT_SQLITE, SQLITE),
                           ("ecst into PostgreSQL, confluent-kafka / kafka-python", CONFLUENT_PG, PG),
                           ("ecst into PostgreSQL, decoded in the database / in Python", PG, PG_PYTHON),
                           ("ecst decoding in Python into PostgreSQL / JDBC sink", PG_PYTHON, SINK)):
            r = round_ratios(a["runs"], "events_per_s", x, y)
            if r is not None:
                lines += [f"- median of the rounds' ratios, {what}: **{r:.2f}**"]
        lines += [""]
        lines += [f"![apply throughput]({CHARTS}/apply.png)", ""]
    if "raw" in sc:
        lines += ["## Raw limits", "",
                  f"The final rows of {sc['raw']['rows']:,} users, loaded in one transaction with no Kafka, "
                  "no decoding and no position guard: what the databases take at best.", ""]
        lines += _side_table(sc["raw"]["runs"], [("rows_per_s", "rows/s", 0)])
    if "bootstrap" in sc:
        b = sc["bootstrap"]
        lines += ["## Bootstrap", "",
                  f"{b['rows']:,} existing users; from `connectors apply` until ecst's copy is ready (SQLite "
                  "state, the consumer started before the connector), against the time Debezium alone "
                  "needs to put the snapshot into the topic. Each run is a new connector, slot and "
                  "topic.", ""]
        lines += _side_table(b["runs"], [("seconds", "seconds", 2)])
        for what, x in (("ecst end to end / Debezium only", BOOT_ECST),
                        ("ecst end to end with confluent-kafka / Debezium only", BOOT_CONFLUENT)):
            r = round_ratios(b["runs"], "seconds", x, BOOT_DEBEZIUM)
            if r is not None:
                lines += [f"- median of the rounds' ratios, {what}: **{r:.2f}**"]
        lines += [""]
        lines += [f"![bootstrap]({CHARTS}/bootstrap.png)", ""]
    if "latency" in sc:
        lat = sc["latency"]
        lines += ["## Streaming latency", "",
                  f"A writer updates the producer's table at a fixed rate for {lat['seconds']:.0f} s; the "
                  "latency of a change is from its commit to its row applied in the target (how it is "
                  "measured: `benchmarks/scenarios_connect.py`). Backlog: seconds from the writer's end "
                  "until the last change was applied.", ""]
        rows = []
        for rate, runs in lat["rates"].items():
            p50, p99, mx = (medians(runs, k) for k in ("p50_ms", "p99_ms", "max_ms"))
            backlog, kept = medians(runs, "backlog_s"), medians(runs, "kept_up")
            for side in dict.fromkeys(r["side"] for r in runs):
                rows.append([f"{int(rate):,}", side, _n(p50.get(side)), _n(p99.get(side)), _n(mx.get(side)),
                             _n(backlog.get(side), 1), "yes" if kept.get(side, 0) >= 0.5 else "**no**"])
        lines += _table(["changes/s", "side", "p50 ms", "p99 ms", "max ms", "backlog s", "kept up"], rows)
        sustained = highest_sustained(lat["rates"])
        only_at = [rate for rate, runs in lat["rates"].items()
                   if any(r["side"] == LATENCY_CONFLUENT for r in runs)]
        lines += ["Highest rate kept up with (most rounds without a growing backlog): " + ", ".join(
            f"{side} {_n(rate)} changes/s" if rate else f"{side} none of these"
            for side, rate in sustained.items() if side != LATENCY_CONFLUENT) + ".", ""]
        if only_at:
            lines += [f"`{LATENCY_CONFLUENT}` is `ecst consume --kafka-client confluent`, the optional "
                      f"client, run at {', '.join(f'{int(r):,}' for r in only_at)} changes/s only.", ""]
        lines += [f"![latency]({CHARTS}/latency.png)", ""]
    if "scale" in sc:
        lines += ["## Scale", "", "ecst reading the snapshot of N users into SQLite (one run per N).", ""]
        lines += _table(["rows", "events/s", "CPU µs per row", "peak RSS (MB)"],
                        [[_n(r["rows"]), _n(r["events_per_s"]), _n(r["cpu_us_per_row"], 1),
                          _n(r["peak_rss_mb"])] for r in sc["scale"]["runs"]])
        lines += [f"![scale]({CHARTS}/scale.png)", ""]
    lines += ["Raw figures of this run: [benchmarks-raw.json](benchmarks-raw.json); goals: "
              "[benchmarks.json](benchmarks.json).", ""]
    return "\n".join(lines)


# ----- charts -----------------------------------------------------------------------------------
def charts(run: dict[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    sc, made = run["scenarios"], []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        made.append(folder / name)

    if "apply" in sc:
        m = medians(sc["apply"]["runs"], "events_per_s")
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.barh(list(m), list(m.values()),
                color=["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#64b5cd"][: len(m)])
        ax.set_xlabel("events/s (median)")
        ax.set_title(f"Apply {sc['apply']['records']:,} records")
        ax.invert_yaxis()
        save(fig, "apply.png")
    if "bootstrap" in sc:
        m = medians(sc["bootstrap"]["runs"], "seconds")
        fig, ax = plt.subplots(figsize=(7, 2.6))
        ax.barh(list(m), list(m.values()), color=["#4c72b0", "#8c8c8c", "#8172b2"][: len(m)])
        ax.set_xlabel("seconds from connectors apply (median)")
        ax.set_title(f"Bootstrap of {sc['bootstrap']['rows']:,} users")
        ax.invert_yaxis()
        save(fig, "bootstrap.png")
    if "latency" in sc:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        rates = sorted(int(r) for r in sc["latency"]["rates"])
        for side, colour in (("ecst", "#4c72b0"), ("sink", "#c44e52")):
            for key, style in (("p50_ms", "--"), ("p99_ms", "-")):
                found = [medians(sc["latency"]["rates"][str(r)], key).get(side) for r in rates]
                ys = [float("nan") if y is None else y for y in found]  # a gap where a side has none
                ax.plot(rates, ys, style, marker="o", color=colour, label=f"{side} {key[:3]}")
        ax.set_xlabel("changes/s")
        ax.set_ylabel("latency, ms")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title("Commit to applied")
        save(fig, "latency.png")
    if "scale" in sc and sc["scale"]["runs"]:
        runs = sc["scale"]["runs"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
        ns = [r["rows"] for r in runs]
        a1.plot(ns, [r["cpu_us_per_row"] for r in runs], marker="o")
        a1.set_xscale("log")
        a1.set_ylim(bottom=0)
        a1.set_title("CPU µs per row")
        a2.plot(ns, [r["peak_rss_mb"] for r in runs], marker="o", color="#55a868")
        a2.set_xscale("log")
        a2.set_ylim(bottom=0)
        a2.set_title("peak RSS, MB")
        for a in (a1, a2):
            a.set_xlabel("rows")
        save(fig, "scale.png")
    return made


def write(run: dict[str, Any], out: Path) -> None:
    """benchmarks.md, the charts and benchmarks.json under `out`."""
    charts(run, out / CHARTS)
    (out / "benchmarks.md").write_text(markdown(run))
    (out / "benchmarks.json").write_text(json.dumps(goals(run), indent=1) + "\n")

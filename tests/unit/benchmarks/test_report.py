"""The harness's report: goals, tables and charts from one run's figures (no stack)."""

import json

import pytest

from benchmarks import report

pytestmark = pytest.mark.unit


def _run(**scenarios):
    return {
        "quick": False,
        "sizes": {"repeats": 3},
        "facts": {"date": "2026-11-30T00:00:00+00:00", "commit": "abc1234", "duration_s": 10,
                  "load_average_start": [1.0, 1.0, 1.0], "load_average_end": [2.0, 2.0, 2.0],
                  "cpu": "cpu", "cores": 2, "memory_gib": 24, "os": "linux", "python": "3.11",
                  "versions": {"postgresql": "15", "kafka": "4.3.0", "debezium": "3.6.1.Final",
                               "debezium-connector-jdbc": "3.6.0.Final", "kafka-python": "3",
                               "SQLAlchemy": "2", "psycopg": "3", "orjson": "3"}},
        "scenarios": scenarios,
    }


def _sides(rounds, **per_side):
    return [{"side": side, "round": i, **figures[i]} for i in range(rounds)
            for side, figures in per_side.items()]


def _ecst(*rates):
    return [{"events_per_s": v, "cpu_s_per_1000": 0.1, "peak_rss_mb": 90} for v in rates]


APPLY = {"rows": 10, "records": 20, "runs": _sides(
    3, **{"ecst, SQLite": _ecst(60e3, 40e3, 55e3), "ecst, PostgreSQL": _ecst(30e3, 20e3, 31e3),
          "JDBC sink, PostgreSQL": [{"events_per_s": v, "cpu_s_per_1000": 0.2} for v in (10e3, 20e3, 15e3)]})}


def test_medians_are_per_side_and_ratios_per_round():
    assert report.medians(APPLY["runs"], "events_per_s") == {
        "ecst, SQLite": 55e3, "ecst, PostgreSQL": 30e3, "JDBC sink, PostgreSQL": 15e3}
    # rounds: 30/10, 20/20, 31/15 -> median 2.0667
    ratio = report.round_ratios(APPLY["runs"], "events_per_s", "ecst, PostgreSQL", "JDBC sink, PostgreSQL")
    assert ratio == pytest.approx(31 / 15)


def test_goals_compare_with_targets_and_skip_what_did_not_run():
    goals = {g["name"]: g for g in report.goals(_run(apply=APPLY))}
    pg = goals["apply into PostgreSQL, ecst / JDBC sink (events/s, same run)"]
    assert pg["measured"] == pytest.approx(2.0) and pg["target"] == 1.5
    assert pg["met"] and pg["better"] == "higher"
    sqlite = goals["apply into SQLite"]
    assert sqlite["measured"] == 55e3 and sqlite["met"]
    assert all(g["commit"] == "abc1234" and g["unit"] for g in goals.values())
    assert len(goals) == 2  # no bootstrap, latency or scale in this run


def test_latency_goal_targets_the_sinks_p99_of_the_same_run():
    rates = {"3000": _sides(3, ecst=[{"p99_ms": v} for v in (900, 1000, 1100)],
                            sink=[{"p99_ms": v} for v in (800, 700, 900)]),
             "1000": _sides(3, ecst=[{"p99_ms": v} for v in (300, 400, 600)],
                            sink=[{"p99_ms": 1} for _ in range(3)])}
    goals = {g["name"]: g for g in report.goals(_run(latency={"seconds": 60, "rates": rates}))}
    at3000 = goals["p99 latency at 3,000 changes/s, below the JDBC sink's on the same run"]
    assert (at3000["measured"], at3000["target"], at3000["met"]) == (1000, 800, False)
    at1000 = goals["p99 latency at 1,000 changes/s"]
    assert (at1000["measured"], at1000["met"]) == (400, True)


def test_bootstrap_and_scale_goals_are_lower_is_better():
    boot = {"rows": 5, "runs": _sides(3, **{"ecst end to end": [{"seconds": s} for s in (12, 13, 11)],
                                            "Debezium only": [{"seconds": s} for s in (10, 10, 10)]})}
    scale = {"runs": [{"rows": 100, "events_per_s": 1, "cpu_us_per_row": 1, "peak_rss_mb": 80},
                      {"rows": 1000, "events_per_s": 1, "cpu_us_per_row": 1, "peak_rss_mb": 160}]}
    goals = {g["name"]: g for g in report.goals(_run(bootstrap=boot, scale=scale))}
    assert goals["bootstrap end to end / Debezium only"]["measured"] == pytest.approx(1.2)
    assert goals["bootstrap end to end / Debezium only"]["met"]
    assert goals["peak RSS at 1,000 rows"]["measured"] == 160 and not goals["peak RSS at 1,000 rows"]["met"]


def test_write_produces_markdown_charts_and_goals(tmp_path):
    ecst = {"p50_ms": 50, "p99_ms": 90, "max_ms": 120, "backlog_s": 0.1, "kept_up": True}
    sink = {"p50_ms": 500, "p99_ms": 900, "max_ms": 1200, "backlog_s": 1, "kept_up": True}
    rates = {"1000": _sides(3, ecst=[ecst] * 3, sink=[sink] * 3)}
    run = _run(apply=APPLY, latency={"seconds": 60, "rates": rates},
               scale={"runs": [{"rows": 100, "events_per_s": 1, "cpu_us_per_row": 1, "peak_rss_mb": 80}]})
    report.write(run, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| ecst, SQLite | 55,000 |" in text
    assert "| 1,000 | ecst | 50 | 90 | 120 | 0.1 | yes |" in text
    assert "**2.07**" in text  # the median of the rounds' ratios
    for chart in ("apply.png", "latency.png", "scale.png"):
        assert (tmp_path / report.CHARTS / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"{report.CHARTS}/{chart}" in text
    assert json.loads((tmp_path / "benchmarks.json").read_text()) == report.goals(run)


def test_highest_sustained_rate_is_the_highest_most_rounds_kept_up_with():
    def runs(ecst, sink):
        return _sides(3, ecst=[{"kept_up": k} for k in ecst], sink=[{"kept_up": k} for k in sink])

    rates = {"500": runs([True] * 3, [True] * 3), "1000": runs([True, True, False], [False, False, True]),
             "3000": runs([False, True, False], [False] * 3)}
    assert report.highest_sustained(rates) == {"ecst": 1000, "sink": 500}
    assert report.highest_sustained({"500": runs([False] * 3, [True] * 3)}) == {"ecst": None, "sink": 500}


def test_the_optional_clients_sides_get_ratios_and_unmet_goals_link_to_their_bounds():
    runs = _sides(3, **{report.SQLITE: _ecst(4e3, 5e3, 6e3), report.PG: _ecst(4e3, 4e3, 4e3),
                        report.SINK: [{"events_per_s": 5e3, "cpu_s_per_1000": 0.2}] * 3,
                        report.CONFLUENT_SQLITE: _ecst(8e3, 9e3, 12e3),
                        report.CONFLUENT_PG: _ecst(6e3, 7e3, 5e3)})
    text = report.markdown(_run(apply={"rows": 10, "records": 20, "runs": runs}))
    assert "| ecst, SQLite, confluent-kafka | 9,000 |" in text
    assert "confluent-kafka / kafka-python: **2.00**" in text  # SQLite: 8/4, 9/5, 12/6
    assert "ecst with confluent-kafka into PostgreSQL / JDBC sink: **1.20**" in text  # 6/5, 7/5, 5/5
    assert "ecst into PostgreSQL / JDBC sink: **0.80**" in text
    # the goals stay the default client's: 4,000/5,000 and 5,000 events/s, neither met
    goals = {g["name"]: g for g in report.goals(_run(apply={"rows": 10, "records": 20, "runs": runs}))}
    assert goals["apply into SQLite"]["measured"] == 5e3
    assert text.count(f"**no** ([what bounds it]({report.BOUNDS}))") == 2


def test_bootstrap_reports_the_optional_client_beside_the_goal_side():
    boot = {"rows": 5, "runs": _sides(3, **{report.BOOT_ECST: [{"seconds": s} for s in (20, 18, 22)],
                                            report.BOOT_DEBEZIUM: [{"seconds": 10}] * 3,
                                            report.BOOT_CONFLUENT: [{"seconds": s} for s in (13, 12, 11)]})}
    run = _run(bootstrap=boot)
    text = report.markdown(run)
    assert "ecst end to end / Debezium only: **2.00**" in text
    assert "ecst end to end with confluent-kafka / Debezium only: **1.20**" in text
    assert [g["measured"] for g in report.goals(run)] == [2.0]  # the goal is the default client's


def test_the_optional_clients_latency_side_is_shown_but_not_ranked_nor_a_goal():
    figures = {"p50_ms": 50, "p99_ms": 90, "max_ms": 120, "backlog_s": 0.1, "kept_up": True}
    rates = {"1000": _sides(3, ecst=[figures] * 3, sink=[figures] * 3),
             "3000": _sides(3, ecst=[{**figures, "p99_ms": 5000, "kept_up": False}] * 3,
                            sink=[{**figures, "p99_ms": 3000}] * 3,
                            **{report.LATENCY_CONFLUENT: [{**figures, "p99_ms": 2000}] * 3})}
    run = _run(latency={"seconds": 60, "rates": rates})
    text = report.markdown(run)
    assert f"| 3,000 | {report.LATENCY_CONFLUENT} | 50 | 2,000 | 120 | 0.1 | yes |" in text
    assert "ecst 1,000 changes/s, sink 3,000 changes/s." in text
    assert "run at 3,000 changes/s only" in text
    goals = {g["name"]: g["measured"] for g in report.goals(run)}
    assert goals["p99 latency at 3,000 changes/s, below the JDBC sink's on the same run"] == 5000

"""Every metric the dashboard and the alert rules read exists: an ecst_* name (or a process_* / python_* one
of prometheus_client's collectors) appears in a real /metrics scrape of the consumer's status server, any
other name is in deploy/monitoring/external-metrics.txt. Every name the consumer exported before it moved to
prometheus_client is still exported."""

import json

import pytest

from ecst.consumer.chores import REBUILD_MODES
from ecst.consumer.http import StatusServer
from ecst.consumer.metrics import Metrics
from tests.integration.cli import http_get
from tests.unit.monitoring.files import (
    DASHBOARD,
    dashboard_expressions,
    dashboard_panels,
    external_metrics,
    promtool,
    rule_expressions,
)
from tests.unit.monitoring.promql import metric_names

# The labels the consumer sets on each family (ecst/consumer/*.py); a family not listed has none.
LABELS = {
    "ecst_events_applied_total": {"op": "c", "table": "users"},
    "ecst_dead_lettered_total": {"stage": "decode"},
    "ecst_partition_lag": {"topic": "producer.public.users", "partition": "0"},
    "ecst_topic_present": {"topic": "producer.public.users"},
    "ecst_snapshot_complete": {"topic": "producer.public.users"},
    "ecst_rebuild_in_progress": {"mode": REBUILD_MODES[0]},
}


def family(sample: str) -> str:
    """The family a sample name belongs to (a histogram's `_bucket`, `_sum` and `_count` are one)."""
    return sample.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")


@pytest.fixture(scope="module")
def scrape():
    """The body of a /metrics scrape of the consumer's status server, every family recorded once."""
    metrics = Metrics()
    for name, (kind, _) in Metrics.HELP.items():
        if kind == "counter":
            metrics.inc(name, 1, **LABELS.get(name, {}))
        else:
            metrics.set(name, 1, **LABELS.get(name, {}))
    metrics.observe_batch(0.02)
    server = StatusServer("127.0.0.1", 0, healthy=lambda: True, not_ready=lambda: None,
                          metrics=metrics).start()
    try:
        status, body = http_get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
    assert status == 200
    return body


@pytest.fixture(scope="module")
def scraped(scrape):
    """The sample names of the scrape."""
    body = scrape
    names = {line.split("{")[0].split()[0] for line in body.splitlines() if line and not line.startswith("#")}
    families = {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")}
    assert families <= {family(n) for n in names}, "a family of the scrape has no sample: record one here"
    return names


EXPRESSIONS = {**rule_expressions(), **dashboard_expressions()}


@pytest.mark.parametrize("where", sorted(EXPRESSIONS))
def test_every_metric_read_exists(where, scraped):
    external = external_metrics()
    names = metric_names(EXPRESSIONS[where])
    assert names, f"{where}: no metric in {EXPRESSIONS[where]!r}"
    for name in names:
        if name in scraped:
            continue
        if name.startswith(("ecst_", "process_", "python_")):
            assert name in scraped, f"{where} reads {name}, which the consumer's /metrics does not export"
        else:
            assert name in external, (
                f"{where} reads {name}: not an ecst metric, and not in external-metrics.txt")


# Every sample name a scrape of the consumer held before /metrics went through prometheus_client
# (ecst 0.1.0's own text renderer): dashboards and alerts of deployed consumers read them.
NAMES_BEFORE_PROMETHEUS_CLIENT = frozenset("""
ecst_batch_seconds_bucket ecst_batch_seconds_count ecst_batch_seconds_sum ecst_batches_total
ecst_dead_lettered_total ecst_events_applied_total ecst_events_stale_total ecst_kafka_up ecst_partition_lag
ecst_ready ecst_rebuild_in_progress ecst_rebuild_rows_applied ecst_rebuild_rows_expected
ecst_rebuild_rows_per_second ecst_records_ignored_total ecst_replication_delay_seconds ecst_snapshot_complete
ecst_state_store_retries_total ecst_state_store_up ecst_topic_present
""".split())


def test_every_name_exported_before_is_still_exported_with_its_type(scrape, scraped):
    assert not NAMES_BEFORE_PROMETHEUS_CLIENT - scraped, "a metric name dashboards read is gone"
    types = dict(line.split()[2:4] for line in scrape.splitlines() if line.startswith("# TYPE "))
    assert types["ecst_batch_seconds"] == "histogram"
    for name in NAMES_BEFORE_PROMETHEUS_CLIENT - {"ecst_batch_seconds_bucket", "ecst_batch_seconds_count",
                                                  "ecst_batch_seconds_sum"}:
        assert types[name] == ("counter" if name.endswith("_total") else "gauge"), name
    # no OpenMetrics `_created` series: they would double the series of every counter
    assert not [n for n in scraped if n.endswith("_created")]


def test_the_scrape_has_the_build_info_and_the_process_and_python_collectors(scrape, scraped):
    from ecst import __version__

    assert f'ecst_build_info{{version="{__version__}"}} 1.0' in scrape.splitlines()
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
            "python_info", "python_gc_collections_total"} <= scraped


def test_every_external_metric_listed_is_used():
    used = set().union(*(metric_names(e) for e in EXPRESSIONS.values()))
    assert not external_metrics() - used, "external-metrics.txt lists names nothing reads"


def test_the_dashboard_shows_every_family_the_consumer_exports(scraped):
    shown = set().union(*(metric_names(e) for e in dashboard_expressions().values()))
    families = {family(n) for n in scraped if n.startswith("ecst_")}  # not every process_*/python_* one
    shown_families = {family(n) for n in shown}
    assert not families - shown_families, f"no panel shows {sorted(families - shown_families)}"


def test_the_dashboard_is_importable():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            pos = p["gridPos"]
            assert pos["x"] + pos["w"] <= 24, f"{p['title']} is wider than the grid"


def test_promtool_lints_the_scrape(scrape):
    """`promtool check metrics`: the exposition format, and naming conventions (counters end in _total)."""
    promtool("check", "metrics", stdin=scrape)

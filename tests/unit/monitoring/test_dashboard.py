"""Every metric the dashboard and the alert rules read exists: an ecst_* name appears in a real /metrics
scrape of the consumer's status server, any other name is in deploy/monitoring/external-metrics.txt."""

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
        if name.startswith("ecst_"):
            assert name in scraped, f"{where} reads {name}, which the consumer's /metrics does not export"
        else:
            assert name in external, (
                f"{where} reads {name}: not an ecst metric, and not in external-metrics.txt")


def test_every_external_metric_listed_is_used():
    used = set().union(*(metric_names(e) for e in EXPRESSIONS.values()))
    assert not external_metrics() - used, "external-metrics.txt lists names nothing reads"


def test_the_dashboard_shows_every_family_the_consumer_exports(scraped):
    shown = set().union(*(metric_names(e) for e in dashboard_expressions().values()))
    families = {family(n) for n in scraped}
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

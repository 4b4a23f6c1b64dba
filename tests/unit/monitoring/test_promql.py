"""The PromQL metric-name parser the dashboard and rule checks rely on."""

import pytest

from tests.unit.monitoring.promql import PromQLError, metric_names


@pytest.mark.parametrize(("expr", "names"), [
    ("ecst_ready == 0", {"ecst_ready"}),
    ("up", {"up"}),
    ('ecst_ready{job="ecst", instance=~"$instance"}', {"ecst_ready"}),
    ("increase(ecst_dead_lettered_total[10m]) > 0", {"ecst_dead_lettered_total"}),
    ("sum by (op, table) (rate(ecst_events_applied_total[$__rate_interval]))", {"ecst_events_applied_total"}),
    ("sum(rate(ecst_batches_total[5m])) by (job)", {"ecst_batches_total"}),
    ('histogram_quantile(0.95, sum by (le) (rate(ecst_batch_seconds_bucket{instance=~"$instance"}[5m])))',
     {"ecst_batch_seconds_bucket"}),
    ("rate(ecst_batch_seconds_sum[5m]) / rate(ecst_batch_seconds_count[5m])",
     {"ecst_batch_seconds_sum", "ecst_batch_seconds_count"}),
    ("max by (job, instance) (ecst_rebuild_in_progress) == 1\n"
     "and on (job, instance) delta(ecst_rebuild_rows_applied[15m]) <= 0",
     {"ecst_rebuild_in_progress", "ecst_rebuild_rows_applied"}),
    ("a * on (instance) group_left (topic, partition) b", {"a", "b"}),
    ("ecst_partition_lag offset 1h unless ecst_partition_lag @ 1700000000", {"ecst_partition_lag"}),
    ("max_over_time(ecst_partition_lag[1h:5m]) > bool 1e3", {"ecst_partition_lag"}),
    ('{__name__="ecst_kafka_up", job="ecst"}', {"ecst_kafka_up"}),
    ('label_replace(up, "dst", "$1", "instance", "(.*):.*")', {"up"}),
    ('topk(5, kafka_connect_connector_task_status{status!="running"})',
     {"kafka_connect_connector_task_status"}),
    ("count without (status) (x) or vector(0)", {"x"}),
    ("ecst_rebuild_rows_applied / (ecst_rebuild_rows_expected > 0) * 100",
     {"ecst_rebuild_rows_applied", "ecst_rebuild_rows_expected"}),
    ("-1 + 2.5 * 0x10", set()),
    ("sum(x) # a comment naming not_a_metric", {"x"}),
])
def test_metric_names(expr, names):
    assert metric_names(expr) == names


def test_an_unknown_function_is_an_error_not_a_guess():
    with pytest.raises(PromQLError, match="unknown function 'ratee'"):
        metric_names("ratee(ecst_batches_total[5m])")


@pytest.mark.parametrize("expr", ["sum(rate(x[5m])", "x{job=\"a\"", "ecst_ready ? 1"])
def test_malformed_expressions_are_errors(expr):
    with pytest.raises(PromQLError):
        metric_names(expr)

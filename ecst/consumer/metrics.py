"""The consumer's metrics, exported through prometheus_client: ecst's own families (the names
below, stable: dashboards and alerts read them), `ecst_build_info`, and the client's process and
Python collectors (`process_*`, `python_*`).

Each `Metrics` has its own registry (a process may run several consumers, e.g. a rebuild beside
the live one, and tests make many). ecst's families are kept here and handed to the registry by a
collector at each scrape, so that a family's labels need no declaring ahead (a topic, a table and
an op are known only once seen) and `value()` reads back what was set.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ecst import __version__

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format generate_latest writes


class Metrics:
    """Counters, gauges and one histogram, safe to update from the consumer thread and read
    from the HTTP thread; `render()` is the body of a /metrics scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[str, dict[tuple, float]] = defaultdict(dict)
        self.hist_counts: dict[float, int] = {b: 0 for b in BUCKETS}
        self.hist_sum = 0.0
        self.hist_n = 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_EcstCollector(self))
        Info("ecst_build", "The running ecst's version.", registry=self.registry).info(
            {"version": __version__})
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    HELP = {
        "ecst_events_applied_total": ("counter", "Change events written to the state, by op and table."),
        "ecst_events_stale_total": ("counter", "Events rejected as older than the state (guard)."),
        "ecst_records_ignored_total": ("counter", "Kafka tombstones, heartbeats, transaction records."),
        "ecst_dead_lettered_total": ("counter", "Records sent to the dead-letter topic, by stage."),
        "ecst_batches_total": ("counter", "Batches applied."),
        "ecst_partition_lag": ("gauge", "High watermark minus the next offset to apply."),
        "ecst_replication_delay_seconds": ("gauge", "Now minus source.ts_ms of the newest applied event."),
        "ecst_ready": ("gauge", "1 when /readyz answers 200."),
        "ecst_topic_present": ("gauge", "1 while the subscribed topic exists (0: deleted)."),
        "ecst_kafka_up": ("gauge", "0 while Kafka is unreachable and the consumer waits for it."),
        "ecst_state_store_up": ("gauge", "1 while the state store answers, 0 while the consumer waits."),
        "ecst_state_store_retries_total": ("counter", "Failed attempts to reach an unavailable state store."),
        "ecst_snapshot_complete": ("gauge", "1 once the topic's snapshot is fully applied."),
        "ecst_rebuild_in_progress": ("gauge", "1 while `ecst rebootstrap` builds a shadow copy, by mode."),
        "ecst_rebuild_rows_applied": ("gauge", "Rows (replay: records) the rebuild has applied so far."),
        "ecst_rebuild_rows_expected": ("gauge", "Rows the rebuild expects (0 when unknown)."),
        "ecst_rebuild_rows_per_second": ("gauge", "The rebuild's average rate since it started."),
    }

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self.counters[name][tuple(sorted(labels.items()))] += value

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self.gauges[name][tuple(sorted(labels.items()))] = value

    def observe_batch(self, seconds: float) -> None:
        with self._lock:
            for b in BUCKETS:
                if seconds <= b:
                    self.hist_counts[b] += 1
            self.hist_sum += seconds
            self.hist_n += 1

    def value(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self.counters.get(name, {}).get(key, self.gauges.get(name, {}).get(key, 0.0))

    def render(self) -> str:
        """The Prometheus text format (0.0.4) of every family of this registry."""
        return generate_latest(self.registry).decode()

    def families(self) -> Iterator[Metric]:
        """ecst's own families, as prometheus_client hands them to a scrape."""
        with self._lock:
            for name, (kind, text) in self.HELP.items():
                series = self.counters if kind == "counter" else self.gauges
                labelled = dict(series.get(name, {}))
                names = sorted({k for labels in labelled for k, _ in labels})
                make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                family = make(name, text, labels=names)
                for labels, value in sorted(labelled.items()):
                    given = dict(labels)
                    family.add_metric([given.get(k, "") for k in names], value)
                yield family
            histogram = HistogramMetricFamily("ecst_batch_seconds",
                                              "Time to apply one batch in one transaction.")
            buckets = [(f"{b:g}", float(self.hist_counts[b])) for b in BUCKETS]
            histogram.add_metric([], [*buckets, ("+Inf", float(self.hist_n))], self.hist_sum)
            yield histogram


class _EcstCollector(Collector):
    """Hands a `Metrics`' own families to its registry at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()

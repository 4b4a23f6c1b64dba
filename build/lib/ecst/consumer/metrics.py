"""The consumer's metrics, rendered in the Prometheus text format, with no dependency."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in labels)
    return "{" + body + "}"


class Metrics:
    """Counters, gauges and one histogram, safe to update from the consumer thread and read
    from the HTTP thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[str, dict[tuple, float]] = defaultdict(dict)
        self.hist_counts: dict[float, int] = {b: 0 for b in BUCKETS}
        self.hist_sum = 0.0
        self.hist_n = 0

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
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in self.HELP.items():
                series = self.counters.get(name) if kind == "counter" else self.gauges.get(name)
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for labels, v in sorted((series or {}).items()):
                    lines.append(f"{name}{_labels(labels)} {v:g}")
            name = "ecst_batch_seconds"
            lines += [f"# HELP {name} Time to apply one batch in one transaction.",
                      f"# TYPE {name} histogram"]
            for b in BUCKETS:
                lines.append(f'{name}_bucket{{le="{b:g}"}} {self.hist_counts[b]}')
            lines += [f'{name}_bucket{{le="+Inf"}} {self.hist_n}', f"{name}_sum {self.hist_sum:g}",
                      f"{name}_count {self.hist_n}"]
        return "\n".join(lines) + "\n"

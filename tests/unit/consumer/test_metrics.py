from ecst.consumer.metrics import Metrics


def test_prometheus_text_format():
    m = Metrics()
    m.inc("ecst_events_applied_total", 3, op="c", table="users")
    m.inc("ecst_dead_lettered_total", stage="decode")
    m.set("ecst_partition_lag", 7, topic="t", partition="0")
    m.observe_batch(0.02)
    text = m.render()
    assert 'ecst_events_applied_total{op="c",table="users"} 3' in text
    assert 'ecst_dead_lettered_total{stage="decode"} 1' in text
    assert 'ecst_partition_lag{partition="0",topic="t"} 7' in text
    assert 'ecst_batch_seconds_bucket{le="0.025"} 1' in text and "ecst_batch_seconds_count 1" in text
    assert "# TYPE ecst_events_applied_total counter" in text

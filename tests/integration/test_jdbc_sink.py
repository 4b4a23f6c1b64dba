"""The Debezium JDBC sink connector, which the benchmarks compare ecst with
(benchmarks/scenarios_connect.py), is installed on the local stack's Connect worker and copies a
change topic (snapshot, inserts, updates, deletes) into a table equal to the producer's."""

from __future__ import annotations

import time

import psycopg

from benchmarks.scenarios_connect import SINK_CLASS, SINK_DB, sink_connector, table_rows
from ecst import source, verify


def test_the_jdbc_sink_plugin_copies_a_topic_into_a_table_equal_to_the_source(stack, capture):
    local = getattr(stack, "stack", None)
    assert local is not None, "the JDBC sink scenario runs on the local stack (ECST_TEST_STACK=local)"
    plugins = {p["class"] for p in capture.client.request("GET", "/connector-plugins")}
    assert SINK_CLASS in plugins
    capture.create(40)
    capture.apply()
    source.write_changes(capture.conn, capture.table, inserts=5, updates=15, deletes=5, seed=12)
    table = f"sink_{capture.uid}"
    with sink_connector(local, capture.topic, table) as (_name, alive), \
            local.postgres.connect(SINK_DB) as target:
        deadline = time.monotonic() + 45
        while True:
            try:
                copied = table_rows(target, table)
            except psycopg.errors.UndefinedTable:  # not created before the first batch
                copied = []
            result = verify.compare_rows(verify.source_rows(capture.conn, capture.table), copied, ["id"])
            if result.matches or time.monotonic() > deadline:
                break
            alive()
            time.sleep(0.5)
    assert result.matches, result.summary()
    assert result.source_rows == 40

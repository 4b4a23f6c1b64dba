"""End to end on the real stack: snapshot of rows that existed before the connector, then live
changes, applied to the private state and compared row by row, every column."""

import threading

from ecst import source


def test_existing_rows_then_live_changes_reach_the_private_state(capture, state_store):
    # the producer had 3000 users before any connector existed
    capture.create(rows=3000)
    assert capture.apply() == "created"

    # initial snapshot: the consumer is ready once every snapshot record is applied
    consumer = capture.consumer(state_store)
    consumer.run(until_ready=True)
    assert consumer.ready()
    snap = capture.compare(state_store)
    assert snap.matches, snap.summary()
    assert snap.state_rows == 3000

    # live inserts, updates and deletes arrive and the state equals the producer exactly
    done = source.write_changes(capture.conn, capture.table, inserts=150, updates=200, deletes=80, seed=1)
    result = capture.converge(state_store)
    assert result.matches, result.summary()
    assert result.state_rows == 3000 + done.inserted - done.deleted


def test_consumer_stopped_mid_stream_resumes_without_skipping(capture, tmp_path):
    from ecst.consumer.store import StateStore

    capture.create(rows=500)
    capture.apply()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    capture.consumer(store).run(until_ready=True)

    # changes stream while the consumer runs; it is stopped after its first streamed batch
    stop = threading.Event()
    applied = []

    def on_batch(stats):
        applied.append(sum(stats.by_op.values()))
        stop.set()

    live = capture.consumer(store, batch_size=20)
    thread = threading.Thread(target=live.run, kwargs={"stop": stop, "on_batch": on_batch})
    thread.start()
    first = source.write_changes(capture.conn, capture.table, inserts=100, updates=150, deletes=50, seed=2)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert 0 < sum(applied) < first.inserted + first.updated + first.deleted  # really mid-stream

    # more changes while it is down, then a new consumer process takes over from stored offsets
    source.write_changes(capture.conn, capture.table, inserts=50, updates=50, deletes=20, seed=3)
    result = capture.converge(store)
    assert result.matches, result.summary()
    store.close()

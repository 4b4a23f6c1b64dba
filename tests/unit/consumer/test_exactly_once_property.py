"""Property: whatever Kafka and Debezium deliver (duplicates, replays from earlier offsets,
crashes between the state commit and anything else, restarts at any batch boundary, snapshot
rows arriving late), the private state ends equal to the fold of the source history.

The history is random inserts, updates and deletes on a few keys; the stream is what a Debezium
connector emits for it: every change with its LSN, plus the rows of a snapshot taken at a random
point (carrying the snapshot's LSN), spread into the partitions at or after that point. The real
StateStore (SQLite, in memory) applies what a simulated consumer polls.
"""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecst.consumer.events import ChangeEvent
from ecst.consumer.store import StateStore
from ecst.consumer.types import Field

TOPIC = "p.public.things"
FIELDS = (Field("id", "int64", optional=False), Field("v", "string"))
KEY_FIELDS = (Field("id", "int64", optional=False),)

history_st = st.lists(
    st.tuples(st.integers(1, 6), st.one_of(st.none(), st.text("abc", min_size=1, max_size=3))),
    min_size=1, max_size=60,
)


def event(op, key, value, position, partition, offset, snapshot=None):
    return ChangeEvent(op=op, table="things", key={"id": key},
                       after=None if op == "d" else {"id": key, "v": value}, position=position,
                       topic=TOPIC, partition=partition, offset=offset, snapshot=snapshot,
                       fields=FIELDS, key_fields=KEY_FIELDS)


def derive_stream(history, snapshot_at, partitions, rnd):
    """Per-partition logs of (op, key, value, position, snapshot) as Debezium would write them."""
    table, changes, snapshot_rows = {}, [], None
    for i, (key, value) in enumerate(history):
        lsn = 100 + 10 * i
        if value is None:
            if key in table:
                del table[key]
                changes.append(("d", key, None, lsn, None))
        else:
            changes.append(("u" if key in table else "c", key, value, lsn, None))
            table[key] = value
        if i == snapshot_at:
            snap_lsn = lsn + 5
            snapshot_rows = [("r", k, v, snap_lsn, "true") for k, v in sorted(table.items())]
    logs = {p: [] for p in range(partitions)}
    for change in changes:
        logs[change[1] % partitions].append(change)
    for row in snapshot_rows or []:
        log = logs[row[1] % partitions]
        # a snapshot row lands at or after the point of its snapshot, possibly after newer changes
        first = next((i for i, c in enumerate(log) if c[4] is None and c[3] > row[3]), len(log))
        log.insert(rnd.randint(first, len(log)), row)
    return logs, table


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=history_st, data=st.data())
def test_state_equals_the_fold_of_the_history(history, data):
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    partitions = data.draw(st.integers(1, 3))
    snapshot_at = data.draw(st.integers(0, len(history) - 1))
    logs, expected = derive_stream(history, snapshot_at, partitions, rnd)

    store = StateStore("sqlite://")
    try:
        position = {p: 0 for p in logs}
        for _ in range(500):
            if all(position[p] >= len(logs[p]) for p in logs):
                break
            fault = rnd.random()
            if fault < 0.1:  # crash/restart: resume from the offsets stored with the state
                stored = store.stored_offsets()
                position = {p: stored.get((TOPIC, p), 0) for p in logs}
                continue
            if fault < 0.2:  # redelivery from an earlier offset (seek back, rebalance, replay)
                p = rnd.choice(list(logs))
                position[p] = rnd.randint(0, position[p])
                continue
            batch, next_offsets = [], {}
            for p in rnd.sample(list(logs), k=rnd.randint(1, len(logs))):
                take = rnd.randint(1, 5)
                for offset in range(position[p], min(position[p] + take, len(logs[p]))):
                    op, key, value, lsn, snap = logs[p][offset]
                    batch.append(event(op, key, value, lsn, p, offset, snap))
                    if rnd.random() < 0.1:  # a duplicate inside the batch
                        batch.append(event(op, key, value, lsn, p, offset, snap))
                    next_offsets[(TOPIC, p)] = offset + 1
            if not batch:
                continue
            if rnd.random() < 0.1:  # crash before the batch's transaction commits
                stored = store.stored_offsets()
                position = {p: stored.get((TOPIC, p), 0) for p in logs}
                continue
            store.apply(batch, next_offsets)
            for (_, p), o in next_offsets.items():
                position[p] = o
        # the last consumer run reads every partition to its end
        stored = store.stored_offsets()
        for p, log in logs.items():
            start = stored.get((TOPIC, p), 0)
            if start < len(log):
                store.apply([event(*c[:4], p, o, c[4]) for o, c in enumerate(log) if o >= start],
                            {(TOPIC, p): len(log)})
        state = {r["id"]: r["v"] for r in store.rows("things")} if store.has_table("things") else {}
        assert state == expected
    finally:
        store.close()

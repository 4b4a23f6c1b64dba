"""`ecst demo`: the whole pipeline in one run, on the local stack.

1. stack up; 2. the producer's users table with rows that exist before any connector;
3. the connector from connectors/users.yaml; 4. the consumer catches up (initial snapshot);
5. live inserts, updates and deletes arrive; 6. row-by-row comparison, every column.
Re-running starts over: the demo removes its own connector, offsets, slot, topics and state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from kafka.errors import UnknownTopicOrPartitionError

from ecst import kafka, source, verify
from ecst.connectors import apply as apply_mod
from ecst.connectors.client import ConnectClient
from ecst.connectors.definition import ConnectorDefinition, load_definition
from ecst.connectors.slots import wait_for_slot_inactive
from ecst.consumer.runner import Consumer
from ecst.consumer.store import StateStore
from ecst.consumer.writes import ApplyStats
from ecst.exceptions import ConnectError, StackError
from ecst.settings import Settings
from ecst.stack import LocalStack
from ecst.stack.private import private_dir

Echo = Callable[[str], None]


def topic_for(definition: ConnectorDefinition) -> str:
    table = definition.config["table.include.list"].split(",")[0].strip()
    return f"{definition.config['topic.prefix']}.{table}"


def remove_connector(client: ConnectClient, name: str, timeout_s: float = 60.0) -> None:
    """Stop a connector, forget its offsets, delete it: a re-created one snapshots again."""
    if client.status(name) is None:
        return
    client.stop(name)
    deadline = time.monotonic() + timeout_s
    while (client.status(name) or {}).get("connector", {}).get("state") != "STOPPED":
        if time.monotonic() > deadline:
            raise ConnectError(f"connector {name} did not stop within {timeout_s:.0f} s")
        time.sleep(0.5)
    client.reset_offsets(name)
    client.delete(name)


def delete_topics(bootstrap: str, topics: list[str], timeout_s: float = 60.0) -> None:
    admin = kafka.admin(bootstrap)
    try:
        existing = [t for t in topics if t in admin.list_topics()]
        if not existing:
            return
        try:
            admin.delete_topics(existing)
        except UnknownTopicOrPartitionError:
            pass
        deadline = time.monotonic() + timeout_s
        while any(t in admin.list_topics() for t in existing):
            if time.monotonic() > deadline:
                raise StackError(f"Kafka still holds topics {existing} {timeout_s:.0f} s after deleting "
                                 "them: is the broker healthy? (`ecst stack status`), then re-run")
            time.sleep(0.5)
    finally:
        admin.close()


def run_demo(settings: Settings, *, rows: int = 5000, echo: Echo = print) -> bool:
    """Run the demo; True when the private state equals the producer's table at the end."""
    stack = LocalStack(settings)
    stack.up(log=lambda m: echo(f"… {m}"))
    definition = load_definition(settings.project_dir / "connectors" / "users.yaml")
    cfg = definition.config
    table = cfg["table.include.list"].split(",")[0].split(".")[-1]
    topic = topic_for(definition)
    client = ConnectClient(stack.connect.url)
    state_path = settings.home / "demo" / "users.db"

    echo("== resetting the demo (connector, offsets, slot, topics, tables, state)")
    remove_connector(client, definition.name)
    with stack.postgres.connect() as conn:
        wait_for_slot_inactive(conn, cfg["slot.name"])
        source.drop_capture(conn, cfg["slot.name"], cfg["publication.name"])
        side_topics = [cfg[k] for k in ("signal.kafka.topic", "notification.sink.topic.name") if k in cfg]
        delete_topics(stack.kafka.bootstrap,
                      [topic, f"__debezium-heartbeat.{cfg['topic.prefix']}", *side_topics])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state_path}{suffix}").unlink(missing_ok=True)

        echo(f"== producer: table {table} with {rows} users created before any connector exists")
        source.create_users_table(conn, table, rows, replace=True)
        source.prepare_capture(conn, table, cfg["publication.name"],
                               signal_table=source.signal_table_of(cfg))

        echo("== connector: ecst connectors apply -f connectors/users.yaml")
        change = apply_mod.apply(client, definition)
        echo(f"connector/{definition.name} {change.action}")

        private_dir(state_path.parent)  # the state holds users' rows
        store = StateStore(f"sqlite:///{state_path}")
        consumer = Consumer(store, [topic], bootstrap_servers=stack.kafka.bootstrap,
                            group_id="ecst-demo", batch_size=2000)
        echo(f"== consumer: initial copy from {topic} into {state_path}")
        started = time.monotonic()
        consumer.run(until_ready=True)
        snap = verify.compare_rows(verify.source_rows(conn, table), store.rows(table),
                                   verify.primary_key(conn, table))
        echo(f"initial copy: {snap.state_rows} rows in {time.monotonic() - started:.1f} s, "
             f"{'equal to the producer' if snap.matches else 'NOT equal to the producer'}")

        echo("== producer: live inserts, updates and deletes")
        stop = threading.Event()

        names = {"c": "inserts", "u": "updates", "d": "deletes", "r": "snapshot rows", "t": "truncates"}

        def show(batch: ApplyStats) -> None:
            ops = ", ".join(f"{n} {names[op]}" for op, n in sorted(batch.by_op.items()))
            echo(f"   consumer applied: {ops}")

        live = Consumer(store, [topic], bootstrap_servers=stack.kafka.bootstrap,
                        group_id="ecst-demo", batch_size=500)
        errors: list[BaseException] = []

        def run_live() -> None:
            try:
                live.run(stop=stop, on_batch=show)
            except BaseException as exc:  # reported below, in the main thread
                errors.append(exc)

        thread = threading.Thread(target=run_live, name="ecst-demo-consumer", daemon=True)
        thread.start()
        done = source.write_changes(conn, table, inserts=200, updates=300, deletes=100, seed=7)
        echo(f"   producer wrote: {done.inserted} inserts, {done.updated} updates, "
             f"{done.deleted} deletes")
        key = verify.primary_key(conn, table)
        deadline = time.monotonic() + 120
        result = None
        while time.monotonic() < deadline and not errors:
            result = verify.compare_rows(verify.source_rows(conn, table), store.rows(table), key)
            if result.matches:
                break
            time.sleep(1)
        stop.set()
        thread.join(timeout=30)
        if errors:
            raise errors[0]
        result = verify.compare_rows(verify.source_rows(conn, table), store.rows(table), key)
        store.close()
    echo(result.summary())
    return result.matches

"""The connector behind a snapshot-based rebuild: its config, can it snapshot now, signalling it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from ecst.connectors import health, signals
from ecst.connectors.client import ConnectClient
from ecst.connectors.producer import first_line
from ecst.connectors.reset import connector_state
from ecst.connectors.slots import slot_name
from ecst.exceptions import ProducerError, RebuildError, SignalTableError

if TYPE_CHECKING:
    from ecst.kafka import KafkaSettings

log = logging.getLogger(__name__)


@dataclass
class SnapshotSource:
    """The connector side of a snapshot-based rebuild: how to reach it and signal it.

    `producer` opens a connection to the producer database, when one is known: it is needed to
    insert into the signal table (channel `source`) and to drop the slot (mode `fresh`), and is
    used read-only for a row estimate (EXPLAIN of the whole table) for the progress bar.
    `connect_log` is the Connect worker's log file, when it is readable from here (the local
    stack's): Postgres's message for a snapshot query that failed is only there.
    """

    client: ConnectClient
    connector: str
    channel: str = "auto"
    producer: Callable[[], Any] | None = None
    connect_log: Path | None = None

    def config(self) -> dict[str, str]:
        config = self.client.get_config(self.connector)
        if config is None:
            raise RebuildError(f"connector {self.connector!r} does not exist on {self.client.url}: "
                               "`ecst connectors list`")
        return config

    def channels(self) -> signals.Channels:
        """Where the connector listens for signals and reports notifications."""
        return signals.Channels.of(self.connector, self.config())

    def state(self) -> str:
        return connector_state(self.client, self.connector)

    def _slot(self) -> str | None:
        return slot_name(self.client.get_config(self.connector) or {})

    def failure(self) -> health.Diagnosis | None:
        """A FAILED task (or connector), diagnosed with its next step; None otherwise."""
        status = self.client.status(self.connector)
        return health.diagnose(self.connector, status, self._slot()) if status is not None else None

    def problem(self, wait_s: float = 0.0) -> str | None:
        """Why the connector cannot act on a snapshot signal now, with the next step; None when
        it and every one of its tasks are RUNNING. Passing states (a task UNASSIGNED or
        RESTARTING) are waited out for up to `wait_s`; a FAILED task is reported at once."""
        deadline = time.monotonic() + wait_s
        while True:
            status = self.client.status(self.connector)
            if status is None:
                return f"it does not exist on {self.client.url} (`ecst connectors list`)"
            found = health.diagnose(self.connector, status, self._slot())
            if found is not None:
                return f"{found.message.rstrip('.')}. Next: {found.next}"
            state = str((status.get("connector") or {}).get("state", "UNKNOWN"))
            tasks = health.tasks_of(status)
            if state == "RUNNING" and tasks and all(t.state == "RUNNING" for t in tasks):
                return None
            if state in ("PAUSED", "STOPPED"):
                return (f"it is {state}: `ecst connectors resume {self.connector}`, then run this "
                        "command again")
            if time.monotonic() >= deadline:
                what = ", ".join(f"task {t.id} is {t.state}" for t in tasks) or "it has no tasks"
                return (f"it is {state} and {what}, not RUNNING (`ecst connectors status "
                        f"{self.connector}`)")
            time.sleep(1.0)

    def channel_for(self, channels: signals.Channels) -> str:
        """The channel `self.channel` picks for this connector (`Channels.choose`): `auto` is the
        signal table when the producer database is known."""
        return channels.choose(self.channel, table_reachable=self.producer is not None)

    def send(self, signal: signals.SnapshotSignal, channels: signals.Channels,
             bootstrap: KafkaSettings | str) -> str:
        """Send `signal` through the chosen channel; returns the channel used. With `auto`, a
        signal table ecst cannot write to (the database not reached, no INSERT grant, no table)
        falls back to the Kafka channel, with a warning: nothing was inserted, so the signal is
        sent once."""
        channel = self.channel_for(channels)
        if channel == "source":
            try:
                self._insert(channels, signal)
            except SignalTableError as exc:
                if self.channel != "auto" or channels.kafka_topic is None:
                    raise
                log.warning("%s; signalling through the Kafka channel %s instead", exc,
                            channels.kafka_topic)
                channel = "kafka"
        if channel == "kafka":
            if channels.kafka_topic is None:  # channels.choose refuses that
                raise RebuildError("the connector has no Kafka signal channel")
            # the worker's signal.kafka.bootstrap.servers is the same cluster as seen from the worker;
            # ecst produces through its own address
            signals.send_via_kafka(bootstrap, channels.kafka_topic, channels.prefix, signal)
        log.info("sent %s snapshot signal %s through the %s channel", signal.kind, signal.id, channel)
        return channel

    def _insert(self, channels: signals.Channels, signal: signals.SnapshotSignal) -> None:
        """Insert `signal` into the signal table. SignalTableError when nothing was inserted for sure
        (the database not reached, the table or the grant missing); other database errors are a
        ProducerError (the row may have been written: never sent again)."""
        if channels.signal_table is None or self.producer is None:  # the rebuild's checks refuse it
            raise RebuildError("the signal-table channel needs the table and the producer database")
        table, opened = channels.signal_table, False
        try:
            with self.producer() as conn:
                opened = True
                signals.send_via_table(conn, table, signal)
        except ProducerError as exc:  # raised while connecting
            if opened:
                raise
            raise SignalTableError(f"{exc}, or use --channel kafka") from exc
        except _REFUSED as exc:
            raise SignalTableError(f"cannot insert the signal into {table} ({first_line(exc)}): grant "
                                   "INSERT on it to the --producer-url role (deploy/sql/signal.sql), or "
                                   "use --channel kafka") from exc
        except psycopg.Error as exc:
            raise ProducerError(f"inserting the signal into {table} failed ({first_line(exc)}): check "
                                f"`ecst connectors status {self.connector}` before running the command "
                                "again") from exc


# what the database answers to an INSERT it did not perform
_REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable,
            psycopg.errors.ReadOnlySqlTransaction)

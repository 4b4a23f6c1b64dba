"""The local stack without Docker: a private Postgres cluster, a KRaft Kafka broker and a
Kafka Connect worker with Debezium, all on loopback and all started by PID from `.ecst/`."""

from ecst.stack.local import Component, LocalStack

__all__ = ["Component", "LocalStack"]

"""ecst: event-carried state transfer from Debezium change events into a private state store."""

__version__ = "0.1.0"

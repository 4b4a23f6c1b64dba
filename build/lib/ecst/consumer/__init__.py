"""The consumer: Debezium change events from Kafka applied to a private state store."""

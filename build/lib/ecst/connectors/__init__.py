"""Connectors as code: YAML definitions sent to the Kafka Connect REST API."""

"""Thin Kafka adapters shared by every role: topic admin, the producer SDK, dead letters,
the Schema Registry client."""

"""Local infrastructure: a single-node Apache Kafka (KRaft) run from Maven-fetched jars."""

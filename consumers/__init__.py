"""The I/O roles: the stream worker, the ClickHouse store, the webhook dispatcher."""

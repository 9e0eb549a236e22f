"""The store: owns the ClickHouse connection, sinks derived topics into tables and serves
read-only SQL. With embedded chDB only one process may open the data path, and this is it."""

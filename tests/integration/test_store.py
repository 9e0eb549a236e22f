"""The embedded ClickHouse store: migrations, ownership of the data directory, read-only SQL."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.store.clickhouse import Store, migrate, migrations
from consumers.store.raw_tables import RAW_EVENT_TYPES, columns, event_type_table
from consumers.store.service import LOGGED_TABLES
from oddstream.errors import StoreError
from schemas.catalog import load_catalog

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An embedded store in a fresh directory, closed (and unlocked) after the test."""
    opened = Store(f"chdb://{tmp_path / 'ch'}")
    try:
        yield opened
    finally:
        opened.close()


def test_migrations_apply_once_and_in_order(store: Store) -> None:
    versions = [v for v, _, _ in migrations()]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert migrate(store) == versions
    assert migrate(store) == []
    _, rows = store.query("SELECT version FROM schema_migrations FINAL ORDER BY version")
    assert [r[0] for r in rows] == versions
    _, tables = store.query("SHOW TABLES")
    assert {"odds_windows_1m", "dead_letters", "schema_migrations"} <= {t[0] for t in tables}


def test_migrated_raw_tables_have_exactly_the_schemas_columns(store: Store) -> None:
    """If this fails after a schema change, add a migration that alters the table."""
    migrate(store)
    tables = {t: event_type_table(t) for t in RAW_EVENT_TYPES} | {
        "UserBetRecorded": LOGGED_TABLES["UserBetRecorded"]
    }
    for event_type, table in tables.items():
        _, described = store.query(f"DESCRIBE TABLE {table}")
        assert [(r[0], r[1]) for r in described] == columns(load_catalog(), event_type), table


def test_read_only_queries_cannot_write(store: Store) -> None:
    migrate(store)
    with pytest.raises(StoreError, match="readonly"):
        store.query("DROP TABLE odds_windows_1m", readonly=True)
    assert store.query("SELECT count() FROM odds_windows_1m", readonly=True)[1] == [(0,)]


def test_a_second_process_is_told_who_owns_the_embedded_data(tmp_path: Path) -> None:
    path = tmp_path / "ch"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from consumers.store.clickhouse import Store; "
         f"s = Store('chdb://{path}'); print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match=rf"open in another process \(pid {holder.pid}\)"):
            Store(f"chdb://{path}")
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.2)
    Store(f"chdb://{path}").close()  # released when the holder is gone


def test_inserts_keep_working_when_a_table_changes_or_refuses_a_batch(store: Store) -> None:
    """Inserts reuse the column types they asked ClickHouse once per table: a refused batch
    and a table altered meanwhile (a migration another store ran) still leave inserts working."""
    store.command("CREATE TABLE t (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
    store.insert("t", [(1, "a")], ["id", "name"])
    store.insert("t", [(2, "b")], ["id", "name"])
    with pytest.raises(StoreError, match="insert into t failed"):
        store.insert("t", [("not a number", "c")], ["id", "name"])
    store.command("ALTER TABLE t MODIFY COLUMN name LowCardinality(String)")
    store.command("ALTER TABLE t ADD COLUMN odds Float64 DEFAULT 0")
    store.insert("t", [(3, "c")], ["id", "name"])
    store.insert("t", [(4, "d", 2.5)], ["id", "name", "odds"])
    _, rows = store.query("SELECT id, name, odds FROM t ORDER BY id")
    assert rows == [(1, "a", 0.0), (2, "b", 0.0), (3, "c", 0.0), (4, "d", 2.5)]

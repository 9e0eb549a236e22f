"""ClickHouse through clickhouse-connect: embedded chDB (``chdb://``) or a server (``http(s)://``).

All statements go through :class:`Store`, which serialises access (chDB runs in
process and is not safe to call from several threads at once) and wraps driver
errors in :class:`StoreError`.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from oddstream.errors import StoreError

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class Store:
    """One ClickHouse client, used by one thread at a time."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock_file: IO[str] | None = None
        if dsn.startswith("chdb://"):
            path = Path(dsn.removeprefix("chdb://"))
            path.mkdir(parents=True, exist_ok=True)
            self._lock_file = hold_exclusively(path)
        try:
            self._client: Client = clickhouse_connect.get_client(dsn=dsn)
        except Exception as exc:
            raise StoreError(f"cannot open ClickHouse at {redact(dsn)}: {exc}") from exc
        self._lock = threading.Lock()

    def command(self, sql: str) -> Any:
        with self._lock:
            try:
                return self._client.command(sql)
            except Exception as exc:
                raise StoreError(f"statement failed: {exc}") from exc

    def query(self, sql: str, readonly: bool = False) -> tuple[list[str], list[tuple[Any, ...]]]:
        settings = {"readonly": 1} if readonly else None
        with self._lock:
            try:
                result = self._client.query(sql, settings=settings)
            except Exception as exc:
                raise StoreError(str(exc)) from exc
        return list(result.column_names), [tuple(row) for row in result.result_rows]

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        if not rows:
            return
        with self._lock:
            try:
                self._client.insert(table, rows, column_names=list(columns))
            except Exception as exc:
                raise StoreError(f"insert into {table} failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._client.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock


def hold_exclusively(path: Path) -> IO[str]:
    """Lock an embedded ClickHouse directory for this process, or say who holds it.

    chDB itself refuses a second process with "Error initializing EmbeddedServer"; this
    lock turns that into an error that names the holder and the way out.
    """
    lock_file = (path.parent / f"{path.name}.lock").open("a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        raise StoreError(
            f"the embedded ClickHouse at {path} is open in another process (pid {holder}); only one "
            "process may open it: query through that process (`oddstream sql`) or use a ClickHouse server"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(str(os.getpid()))
    lock_file.flush()
    return lock_file


def redact(dsn: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    folder = Path(__file__).resolve().parent / "migrations"
    found = []
    for entry in folder.iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


def statements(sql: str) -> list[str]:
    """Split a migration file into statements; ``--`` comment lines are dropped first."""
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in code.split(";") if part.strip()]


def migrate(store: Store) -> list[int]:
    """Apply the migrations not yet recorded; return the versions applied."""
    applied: set[int] = set()
    try:
        _, rows = store.query("SELECT version FROM schema_migrations")
        applied = {int(r[0]) for r in rows}
    except StoreError:
        pass  # first run: the log table does not exist yet
    done = []
    for version, name, sql in migrations():
        if version in applied:
            continue
        for statement in statements(sql):
            store.command(statement)
        store.insert("schema_migrations", [(version, name)], ["version", "name"])
        done.append(version)
    return done

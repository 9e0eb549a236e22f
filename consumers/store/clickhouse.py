"""ClickHouse through clickhouse-connect: embedded chDB (``chdb://``) or a server (``http(s)://``).

All statements go through :class:`Store`, which serialises access (chDB runs in
process and is not safe to call from several threads at once) and wraps driver
errors in :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.insert import InsertContext

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
        # an insert's column types, asked of ClickHouse once per table and columns rather than
        # per insert (a DESCRIBE each time cost about as much as inserting a small batch)
        self._insert_contexts: dict[tuple[str, tuple[str, ...]], InsertContext] = {}

    def command(self, sql: str) -> Any:
        with self._lock:
            try:
                return self._client.command(sql)
            except Exception as exc:
                raise StoreError(f"statement failed: {exc}") from exc

    def reader(self, limits: QueryLimits) -> Reader:
        """A second handle on the same ClickHouse for analysts' queries: read-only, limited.

        It has its own session and lock, so a query never waits for (nor holds up) this
        store's inserts, and its settings never leak into the writer's session."""
        return Reader(self.dsn, limits)

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
        key = (table, tuple(columns))
        with self._lock:
            try:
                context = self._insert_contexts.get(key)
                if context is None:
                    context = self._client.create_insert_context(table, column_names=list(columns))
                    self._insert_contexts[key] = context
                context.data = rows
                self._client.insert(context=context)
            except Exception as exc:
                self._insert_contexts.pop(key, None)  # asked afresh next time (the table may have changed)
                raise StoreError(f"insert into {table} failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._client.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock


@dataclass(frozen=True)
class QueryLimits:
    """What one analyst's query may use (docs/operations.md, "SQL endpoint")."""

    max_execution_s: float = 30.0
    max_memory_bytes: int = 1 << 30
    max_rows_to_read: int = 500_000_000
    max_result_rows: int = 1_000_000
    max_result_bytes: int = 256 << 20
    max_threads: int = 1  # embedded: leave the other cores to ingestion

    def settings(self, embedded: bool) -> dict[str, Any]:
        """Session settings; ``readonly`` last, since it forbids changing any after it."""
        return {
            "max_execution_time": self.max_execution_s,
            "timeout_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_bytes,
            "max_rows_to_read": self.max_rows_to_read,
            "read_overflow_mode": "throw",
            "max_result_rows": self.max_result_rows,
            "max_result_bytes": self.max_result_bytes,
            "result_overflow_mode": "throw",
            "max_threads": self.max_threads if embedded else 0,
            # embedded: 1 forbids changing settings at all; a server session keeps 2 (its
            # driver sends settings per request) and the statement guard refuses SETTINGS
            "readonly": 1 if embedded else 2,
        }


EXCEEDED = {
    "TIMEOUT_EXCEEDED": "query exceeded the time limit of {s.max_execution_s:g} s "
    "(ODDSTREAM_SQL_MAX_EXECUTION_S)",
    "MEMORY_LIMIT_EXCEEDED": "query exceeded the memory limit of {s.max_memory_bytes:,} bytes "
    "(ODDSTREAM_SQL_MAX_MEMORY_BYTES)",
    "TOO_MANY_ROWS": "query exceeded the limit of {s.max_rows_to_read:,} rows read "
    "(ODDSTREAM_SQL_MAX_ROWS_TO_READ)",
    "TOO_MANY_ROWS_OR_BYTES": "query exceeded a limit on rows read ({s.max_rows_to_read:,}) or returned "
    "({s.max_result_rows:,} rows, {s.max_result_bytes:,} bytes)",
}


class Reader:
    """The analysts' handle: read-only, with :class:`QueryLimits`, reopened after a failure."""

    def __init__(self, dsn: str, limits: QueryLimits) -> None:
        self.dsn = dsn
        self.limits = limits
        self._lock = threading.Lock()
        self._client = self._open()

    def _open(self) -> Client:
        embedded = self.dsn.startswith("chdb://")
        try:
            return clickhouse_connect.get_client(dsn=self.dsn, settings=self.limits.settings(embedded))
        except Exception as exc:
            raise StoreError(f"cannot open a read-only session on {redact(self.dsn)}: {exc}") from exc

    def query(self, sql: str, wait_s: float) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one query; :class:`StoreError` with a plain reason if it fails or is cut."""
        if not self._lock.acquire(timeout=wait_s):
            raise QueryBusy(f"another query has been running for over {wait_s:g} s; try again")
        try:
            try:
                result = self._client.query(sql)
                return list(result.column_names), [tuple(row) for row in result.result_rows]
            except Exception as exc:
                text = str(exc)
                # a failed call can leave an embedded handle unusable: start the next one afresh
                self._reopen()
                for code, message in EXCEEDED.items():
                    if f"({code})" in text:
                        raise StoreError(message.format(s=self.limits)) from exc
                raise StoreError(text) from exc
        finally:
            self._lock.release()

    def _reopen(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()
        self._client = self._open()

    def close(self) -> None:
        with self._lock:
            self._client.close()


class QueryBusy(StoreError):
    """The read-only session is taken by another query for longer than a caller waits."""


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


def create_spec_tables(store: Store, tables: dict[str, str]) -> None:
    """Create each window spec's table (``table -> the one-minute table it copies``) if missing:
    the same columns, engine and order. Names come from validated spec names (streams/specs.py)."""
    for table, base in sorted(tables.items()):
        if not re.fullmatch(r"[a-z0-9_]+", table):
            raise StoreError(f"refusing to create table {table!r}: not a window spec table name")
        store.command(f"CREATE TABLE IF NOT EXISTS {table} AS {base}")


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

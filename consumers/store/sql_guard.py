"""What an analyst's SQL may be: one read-only statement. Pure.

The engine enforces read-only too (the query session runs with ``readonly=1`` on its own
handle, with limits), but some statements pass ClickHouse's read-only mode and still harm
the store (``KILL QUERY`` cancels the sink's inserts; several statements in one call leave
an embedded handle unusable), and a refusal here says plainly why. So a query must:

* be at most :data:`MAX_QUERY_CHARS` long;
* be one statement: no ``;`` outside strings and comments except one at the end;
* start with SELECT, WITH, SHOW, DESCRIBE/DESC, EXPLAIN or EXISTS;
* carry no ``SETTINGS`` (the limits are the store's), no ``INTO OUTFILE``, no ``FORMAT``
  clause (answers are JSON), and call none of the functions that reach outside the
  database (``file``, ``url``, ``remote``, ``s3`` and the rest of :data:`OUTSIDE_FUNCTIONS`).

Example::

    check_query("SELECT count() FROM bet_placed;")   # -> "SELECT count() FROM bet_placed"
    check_query("SELECT 1; DROP TABLE bet_placed")   # raises QueryRefused
"""

from __future__ import annotations

import re

MAX_QUERY_CHARS = 100_000
READ_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
REFUSED_WORDS = {
    "SETTINGS": "the query limits are the store's (no SETTINGS clause)",
    "OUTFILE": "results are returned, never written to files (no INTO OUTFILE)",
}
OUTSIDE_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "file", "url", "urlCluster", "remote", "remoteSecure", "cluster", "clusterAllReplicas",
        "s3", "s3Cluster", "gcs", "oss", "azureBlobStorage", "azureBlobStorageCluster", "hdfs",
        "hdfsCluster", "mysql", "postgresql", "mongodb", "redis", "sqlite", "jdbc", "odbc",
        "executable", "executablePool", "input", "iceberg", "icebergS3", "icebergAzure", "icebergHDFS",
        "icebergLocal", "deltaLake", "deltaLakeAzure", "hudi", "ytsaurus", "arrowFlight", "fuzzJSON",
        "fuzzQuery", "loop", "merge", "mergeTreeIndex", "prometheusQuery", "timeSeriesData",
    )
)  # fmt: skip
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class QueryRefused(ValueError):
    """The statement is not one read-only query; the message says what is wrong."""


def check_query(sql: str) -> str:
    """The statement to run (without a trailing ``;``), or :class:`QueryRefused`."""
    if len(sql) > MAX_QUERY_CHARS:
        raise QueryRefused(f"query of {len(sql):,} characters is over the limit of {MAX_QUERY_CHARS:,}")
    code, end = _code_outside_literals(sql)
    if not code.strip():
        raise QueryRefused("empty query")
    if ";" in code.rstrip().rstrip(";") or code.rstrip().endswith(";;"):
        raise QueryRefused("one statement at a time (';' separates statements)")
    words = [(m.group(0), m.end()) for m in WORD.finditer(code)]
    if not words:
        raise QueryRefused("not a query")
    first = words[0][0].upper()
    if first not in READ_STATEMENTS:
        allowed = ", ".join(sorted(READ_STATEMENTS))
        raise QueryRefused(f"{first} is not allowed: read-only queries only ({allowed})")
    for word, after in words:
        upper = word.upper()
        if upper in REFUSED_WORDS:
            raise QueryRefused(REFUSED_WORDS[upper])
        called = code[after:].lstrip().startswith("(")
        if upper == "FORMAT" and not called:
            raise QueryRefused("answers are JSON (no FORMAT clause)")
        if called and word.lower() in OUTSIDE_FUNCTIONS:
            raise QueryRefused(f"{word}() reaches outside the database and is not allowed")
    return sql[:end].strip().rstrip(";").rstrip()


def _code_outside_literals(sql: str) -> tuple[str, int]:
    """The text with string literals, quoted identifiers and comments blanked out (same
    length, so positions match), and where the statement's code ends.

    Raises :class:`QueryRefused` for an unterminated literal or comment: what ClickHouse
    would make of the rest is not what this check saw."""
    out: list[str] = []
    i, n, end = 0, len(sql), 0
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote inside the literal
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise QueryRefused(f"unterminated {'string' if c == chr(39) else 'quoted name'}")
            out.append(c + " " * (j - i - 1) + c)
            i, end = j + 1, j + 1
        elif c == "$":
            raise QueryRefused("'$' is not allowed outside strings (no heredoc literals or $ names)")
        elif sql.startswith("--", i) or sql.startswith("# ", i) or sql.startswith("#!", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif sql.startswith("/*", i):
            j, depth = i + 2, 1  # ClickHouse nests /* */ comments
            while depth and j < n:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise QueryRefused("unterminated /* comment")
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            if not c.isspace():
                end = i + 1
            i += 1
    return "".join(out), end

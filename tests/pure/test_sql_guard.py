"""The analysts' SQL: one read-only statement, or a refusal that says why."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.store.sql_guard import MAX_QUERY_CHARS, QueryRefused, check_query

pytestmark = pytest.mark.pure

# at least 20 hostile statements; the integration test runs the same list against a live store
HOSTILE = {
    "INSERT INTO bet_placed SELECT * FROM bet_placed LIMIT 1": "INSERT is not allowed",
    "CREATE TABLE c (a Int8) ENGINE=Memory /*": "unterminated /\\* comment",
    "CREATE TABLE c (a Int8) ENGINE=Memory": "CREATE is not allowed",
    "DROP TABLE bet_placed": "DROP is not allowed",
    "TRUNCATE TABLE bet_placed": "TRUNCATE is not allowed",
    "ALTER TABLE bet_placed DELETE WHERE 1": "ALTER is not allowed",
    "SET readonly = 0": "SET is not allowed",
    "SYSTEM SHUTDOWN": "SYSTEM is not allowed",
    "KILL QUERY WHERE 1": "KILL is not allowed",
    "OPTIMIZE TABLE bet_placed FINAL": "OPTIMIZE is not allowed",
    "RENAME TABLE bet_placed TO x": "RENAME is not allowed",
    "GRANT ALL ON *.* TO default": "GRANT is not allowed",
    "SELECT 1 SETTINGS readonly = 0": "no SETTINGS clause",
    "SELECT 1 SETTINGS max_execution_time = 100000": "no SETTINGS clause",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')": "file\\(\\) reaches outside",
    "SELECT * FROM url('http://169.254.169.254/', 'CSV', 'a String')": "url\\(\\) reaches outside",
    "SELECT * FROM remote('127.0.0.1', system.one)": "remote\\(\\) reaches outside",
    "SELECT * FROM s3('http://x/y.csv')": "s3\\(\\) reaches outside",
    "SELECT * FROM executable('sh', 'TSV', 'a String')": "executable\\(\\) reaches outside",
    "SELECT 1; DROP TABLE bet_placed": "one statement at a time",
    "SELECT 1;; ": "one statement at a time",
    "SELECT 1 /* ; */ ; KILL QUERY WHERE 1": "one statement at a time",
    "SELECT 1 -- ;\n; DROP TABLE x": "one statement at a time",
    "SELECT $$'$$; KILL QUERY WHERE 1; SELECT '": "'\\$' is not allowed",
    "SELECT 'unterminated": "unterminated string",
    "SELECT 1 INTO OUTFILE '/tmp/x'": "INTO OUTFILE",
    "SELECT 1 FORMAT TabSeparated": "no FORMAT clause",
    "/* only a comment */": "empty query",
    "": "empty query",
    "SELEC 1": "SELEC is not allowed",
    "DETACH TABLE bet_placed": "DETACH is not allowed",
    "EXCHANGE TABLES bet_placed AND bet_settled": "EXCHANGE is not allowed",
}


@pytest.mark.parametrize("statement, reason", HOSTILE.items(), ids=range(len(HOSTILE)))
def test_hostile_statements_are_refused_with_a_reason(statement: str, reason: str) -> None:
    with pytest.raises(QueryRefused, match=reason):
        check_query(statement)


@pytest.mark.parametrize(
    "statement, runs",
    [
        ("SELECT count() FROM bet_placed;", "SELECT count() FROM bet_placed"),
        ("  select 'a;b', \"c;d\" -- tail; comment\n", "select 'a;b', \"c;d\""),
        ("WITH 1 AS a SELECT a", "WITH 1 AS a SELECT a"),
        ("SELECT format('{}', 1)", "SELECT format('{}', 1)"),
        ("SELECT 'it''s', 'a\\'b'", "SELECT 'it''s', 'a\\'b'"),
        ("SHOW TABLES", "SHOW TABLES"),
        ("DESCRIBE TABLE bet_placed", "DESCRIBE TABLE bet_placed"),
        ("EXPLAIN SELECT 1", "EXPLAIN SELECT 1"),
        ("SELECT settings_name FROM t /* SETTINGS in a comment */", "SELECT settings_name FROM t"),
        ("SELECT 1 /* a /* nested */ ; */", "SELECT 1"),
        ("SELECT 1 # comment; DROP TABLE x", "SELECT 1"),
    ],
)
def test_read_queries_pass_without_trailing_semicolon_or_comments(statement: str, runs: str) -> None:
    assert check_query(statement) == runs


def test_a_query_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(QueryRefused, match="over the limit"):
        check_query("SELECT " + "1" * MAX_QUERY_CHARS)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_any_text_is_refused_or_one_read_statement(text: str) -> None:
    try:
        statement = check_query(text)
    except QueryRefused as exc:
        assert str(exc)
        return
    assert statement.split()[0].upper().lstrip("(") in {
        "SELECT",
        "WITH",
        "SHOW",
        "DESCRIBE",
        "DESC",
        "EXPLAIN",
        "EXISTS",
    }

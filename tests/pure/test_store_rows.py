"""Rows the store writes for dead letters, including from malformed headers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from consumers.store.service import dead_letter_row
from oddstream.kafka.deadletter import dead_letter_headers

pytestmark = pytest.mark.pure


def test_dead_letter_row_keeps_origin_reason_and_bytes() -> None:
    headers = dead_letter_headers("odds: bad", "t.odds", 2, 41, "odds-window-1m")
    row = dead_letter_row(
        SimpleNamespace(headers=headers, topic="t.dead-letter", value=b"\x00x", timestamp=1_700_000_000_000)
    )
    assert row[:6] == ("t.odds", 2, 41, "odds-window-1m", "odds: bad", b"\x00x")


def test_malformed_headers_do_not_break_the_sink() -> None:
    message = SimpleNamespace(
        headers=[("oddstream.dlq.partition", b"two"), ("oddstream.dlq.offset", b"\xff")],
        topic="t.dead-letter", value=None, timestamp=0,
    )  # fmt: skip
    assert dead_letter_row(message)[:6] == ("t.dead-letter", 0, 0, "", "", b"")

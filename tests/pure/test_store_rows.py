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


def test_every_final_fits_its_tables_columns() -> None:
    from consumers.store.window_rows import FINAL_COLUMNS, derived_columns, final_rows, spec_tables
    from oddstream.simulator.model import MarketSimulator
    from streams.processor import PartitionProcessor
    from streams.specs import DEFAULT_SPECS

    processor, users = PartitionProcessor(partition=0), PartitionProcessor(partition=0)  # + the user stage
    sim = MarketSimulator(
        seed=2, start_ms=1_767_225_600_000, rate_per_s=20.0, market_lifetime_s=(60, 120), anomaly_rate=0.01,
        mispricing_rate=0.01,
    )  # fmt: skip
    finals = []
    rekeyed = 0
    for offset, event in zip(range(6_000), sim.events(), strict=False):
        for emission in processor.process(offset, event.type, event.record, 0).emissions:
            if emission.event_type == "UserBetRecorded":  # the store keeps these raw (user_bets)
                finals += users.process(rekeyed, emission.event_type, emission.record, 0).emissions
                rekeyed += 1
            else:
                finals.append(emission)
    finals += processor.flush() + users.flush()
    tables = set()
    for emission in finals:
        for table, rows in final_rows(emission.event_type, emission.record).items():
            tables.add(table)
            assert all(len(row) == len(derived_columns(DEFAULT_SPECS)[table]) for row in rows), table
    assert tables >= set(FINAL_COLUMNS) | {"predictions", "value_signals", "model_metrics", "alerts"}
    assert set(spec_tables(DEFAULT_SPECS)) == {
        "market_windows_5m_every_1m", "market_books_5m_every_1m", "bet_windows_5m_every_1m",
        "price_windows_60s_sliding",
    } <= tables  # fmt: skip

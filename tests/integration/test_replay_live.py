"""`oddstream replay` against a running, healthy stack exits 0; one altered final row makes it
exit 1, naming the table and the window."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings
from schemas.catalog import Event, load_catalog
from schemas.codec import Codec
from schemas.topics import Topics
from tests.integration.kafka_read import read_all
from tests.integration.roles import Role, environment, wait_for

pytestmark = pytest.mark.integration


def rows(settings: Settings, query: str) -> list[list[Any]]:
    response = httpx.post(f"{settings.sql_endpoint}/sql", content=query, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["rows"]  # type: ignore[no-any-return]


def _final_prices(settings: Settings) -> int:
    try:
        return int(rows(settings, "SELECT count() FROM price_windows_1m FINAL")[0][0])
    except httpx.HTTPError:
        return 0  # the store is still starting


def replay(settings: Settings, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oddstream", "replay", "--name", name, "--no-progress"],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_replay_of_a_running_stack_is_equal_and_one_altered_row_is_named(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"window_size_ms": 5_000, "window_delay_ms": 1_000, "window_grace_ms": 2_000,
                "simulator_rate": 150.0, "simulator_markets": 6}
    )  # fmt: skip
    ensure_topics(settings)
    roles = [Role(settings, "store"), Role(settings, "worker"), Role(settings, "simulate", "--no-progress")]
    try:
        wait_for("settled price windows", lambda: _final_prices(settings) >= 50, 120, roles)
        # user windows close by the slowest bets partition: wait for some, so the replay compares them
        settled_users = "SELECT count() FROM user_window_parts_1m FINAL"
        wait_for("settled user windows", lambda: rows(settings, settled_users)[0][0] >= 100, 120, roles)
        healthy = replay(settings, "while_running")  # the simulator, worker and store carry on meanwhile
        print(healthy.stdout, healthy.stderr)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert "the replay equals the live tables" in healthy.stdout
        lines = [line for line in healthy.stdout.splitlines() if "only replayed" in line]
        assert lines and all("0 differ, 0 only live, 0 only replayed" in line for line in lines)
        [users] = [line for line in lines if line.strip().startswith("user_window_parts_1m ")]
        equal = re.search(r"([\d,]+) equal,", users)
        assert equal is not None and int(equal.group(1).replace(",", "")) > 0, users  # settled rows compared
        assert all(role.alive() for role in roles)

        # a rogue record on the window topic alters one settled final row of price_windows_1m
        topics = Topics(settings.topic_prefix)
        codec = Codec(load_catalog())
        finals = [
            (m, codec.decode(m.value()))
            for m in read_all(settings.bootstrap, topics.name("analytics.prices.1m"))
            if codec.decode(m.value()).record["final"] and codec.decode(m.value()).record["spec"] == "1m"
        ]
        message, event = min(finals, key=lambda f: f[1].record["window_end"])
        forged = {**event.record, "version": event.record["version"] + 1, "high": event.record["high"] + 1.5}
        producer = Producer({"bootstrap.servers": settings.bootstrap})
        producer.produce(
            message.topic() or "",
            key=message.key(),
            value=codec.encode(Event(event.type, forged), trusted=True),
        )
        producer.flush(30)
        market, selection, bookmaker = (forged[k] for k in ("market_id", "selection_id", "bookmaker"))
        start_ms = int(forged["window_start"].timestamp() * 1000)
        wait_for(
            "the altered row live",
            lambda: (
                rows(
                    settings,
                    f"SELECT version FROM price_windows_1m FINAL WHERE market_id = '{market}' "
                    f"AND selection_id = '{selection}' AND bookmaker = '{bookmaker}' "
                    f"AND window_start = fromUnixTimestamp64Milli({start_ms})",
                )
                == [[forged["version"]]]
            ),
            60,
            roles,
        )
        altered = replay(settings, "after_alteration")
        print(altered.stdout, altered.stderr)
        assert altered.returncode == 1, altered.stdout + altered.stderr
        assert "the replay differs from the live tables" in altered.stderr
        named = [
            line for line in altered.stderr.splitlines() if line.strip().startswith("price_windows_1m (")
        ]
        assert len(named) == 1, altered.stderr
        assert f"market_id={market}" in named[0] and f"bookmaker={bookmaker}" in named[0]
        assert "high" in named[0] and "version" in named[0]
        table_line = next(
            line
            for line in altered.stdout.splitlines()
            if line.strip().startswith("price_windows_1m") and "only replayed" in line
        )
        assert "DIFFERENT" in table_line and "1 differ" in table_line
        others = [
            line
            for line in altered.stdout.splitlines()
            if "only replayed" in line and "price_windows_1m" not in line
        ]
        assert all("0 differ, 0 only live, 0 only replayed" in line for line in others)
    finally:
        for role in reversed(roles):
            role.stop()

"""The Bytewax peer: the same windows as a dataflow with one worker.

    .venv-peers/bin/python benchmarks/peers/bytewax_app.py BOOTSTRAP TOPIC EXPECTED SCHEMAS OUT

Decodes in the batches the Kafka source delivers (up to 1,000 records), keeps window
state in memory (no recovery configured: what it does not pay for), reads to the end of
the topic and stops (windows still open then are closed by the end of input).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from bytewax.testing import TestingSink, run_main
from common import GRACE_MS, WINDOW_MS, Decoder, args, event_ms, fold, report

bootstrap, topic_name, expected, schemas, out = args()
decode = Decoder(schemas)
state = {"processed": 0, "first": 0.0}


def decode_batch(messages: list[Any]) -> list[dict[str, Any]]:
    if state["processed"] == 0:
        state["first"] = time.perf_counter()
    state["processed"] += len(messages)
    return [decode(m.value) for m in messages]


flow = Dataflow("peers")
messages = op.input("kafka", flow, KafkaSource([bootstrap], [topic_name], tail=False, batch_size=1000))
records = op.flat_map_batch("decode", messages, decode_batch)
odds = op.filter("odds", records, lambda r: r["_type"] == "OddsChanged")
keyed = op.key_on("market", odds, lambda r: r["market_id"])
clock = EventClock(
    lambda r: datetime.fromtimestamp(event_ms(r) / 1000, tz=UTC),
    wait_for_system_duration=timedelta(milliseconds=GRACE_MS),
)
windower = TumblingWindower(
    length=timedelta(milliseconds=WINDOW_MS), align_to=datetime(2020, 1, 1, tzinfo=UTC)
)
windowed = fold_window("ohlc", keyed, clock, windower, dict, fold, lambda a, b: {**a, **b})
results: list[Any] = []
op.output("windows", windowed.down, TestingSink(results))
run_main(flow)
seconds = time.perf_counter() - state["first"]
align = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1000)
windows = [(market, align + window_id * WINDOW_MS, book) for market, (window_id, book) in results]
report(out, state["processed"], seconds, windows)

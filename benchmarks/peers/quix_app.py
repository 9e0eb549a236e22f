"""The Quix Streams peer: consume, decode, tumbling event-time windows per market, finals out.

    .venv-peers/bin/python benchmarks/peers/quix_app.py BOOTSTRAP TOPIC EXPECTED SCHEMAS OUT

State in RocksDB with changelog topics (Quix's defaults: what it pays for durability);
finals are produced to an output topic.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from typing import Any

from common import GRACE_MS, WINDOW_MS, Decoder, args, event_ms, fold, report
from quixstreams import Application
from quixstreams.models.serializers import Deserializer

bootstrap, topic_name, expected, schemas, out = args()
decode = Decoder(schemas)


class AvroSingleObject(Deserializer):  # type: ignore[misc]
    def __call__(self, value: bytes, ctx: Any) -> Any:
        return decode(value)


app = Application(
    broker_address=bootstrap,
    consumer_group=f"quix-{uuid.uuid4().hex[:8]}",
    auto_offset_reset="earliest",
    state_dir=tempfile.mkdtemp(prefix="quix-state-"),
    loglevel="WARNING",
)
topic = app.topic(
    topic_name,
    key_deserializer="bytes",
    value_deserializer=AvroSingleObject(),
    timestamp_extractor=lambda value, headers, timestamp, kind: event_ms(value),
)
output = app.topic(f"{topic_name}.quix-windows", value_serializer="json", key_serializer="bytes")

processed = 0
first = last = 0.0
windows: list[tuple[str, int, dict[str, Any]]] = []


def count(value: Any) -> None:
    global processed, first, last
    if processed == 0:
        first = time.perf_counter()
    processed += 1
    last = time.perf_counter()
    if processed >= expected:
        app.stop()


def keep(value: Any, key: Any, timestamp: int, headers: Any) -> None:
    windows.append((key.decode(), value["start"], value["value"]))


sdf = app.dataframe(topic)
sdf = sdf.update(count)
sdf = sdf.filter(lambda value: value["_type"] == "OddsChanged")
sdf = sdf.tumbling_window(WINDOW_MS, grace_ms=GRACE_MS).reduce(fold, lambda value: fold({}, value)).final()
sdf = sdf.update(keep, metadata=True)
sdf.to_topic(output)
app.run()
report(out, processed, last - first, windows)

"""Webhook delivery rate: the dispatcher next to a bare async HTTP loop, same receiver, same run.

    make bench-webhooks      (python -m benchmarks.webhooks [--messages 10000])

1. A local receiver (aiohttp, answers 204) counts POSTs and notes when each arrived.
2. Baseline: a bare loop (httpx, the same number of requests in flight as one endpoint's
   lane) POSTs ``--messages`` Standard Webhooks-signed bodies of the same size to it.
3. The real dispatcher process (``oddstream dispatcher``) with one endpoint on that
   receiver delivers the same number of window updates read from Kafka: admission, JSON
   payload, signing, the SSRF-guarded client, the attempt record on ``webhooks.attempts``
   and commits included. Its rate runs from the first delivery to the last.

Prints both rates and the ratio. Goals (issue 12): >= 2,000 deliveries/s and >= 0.7x the
bare loop. Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts a local broker. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from benchmarks.kafka import kafka_for_benchmark
from consumers.dispatcher.endpoints import register_endpoint
from consumers.dispatcher.service import payload_of
from consumers.dispatcher.signing import new_secret, sign
from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.catalog import Event

START_MS = 1_767_225_600_000


class Receiver:
    """An aiohttp endpoint in its own thread and loop, counting what arrives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: list[float] = []
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}/hooks"

    def _serve(self, ready: threading.Event) -> None:
        async def receive(request: web.Request) -> web.Response:
            await request.read()
            self.arrived.append(time.monotonic())
            return web.Response(status=204)

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/hooks", receive)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    def rate_of_last(self, n: int) -> float:
        window = self.arrived[-n:]
        return (len(window) - 1) / (window[-1] - window[0])


def window(n: int) -> dict[str, Any]:
    selections = [
        {"selection_id": s, "open": 2.0, "high": 2.4, "low": 1.9, "last": 2.1, "changes": 5,
         "implied_probability": 0.476} for s in ("home", "draw", "away")
    ]  # fmt: skip
    return {
        "event_id": str(uuid.uuid4()), "event_time": START_MS, "source": "bench", "window_id": f"w{n}",
        "market_id": f"m{n % 40}", "window_start": START_MS, "window_end": START_MS + 60_000, "version": n,
        "selections": selections, "overround": 0.05, "final": False, "bookmakers": [], "consensus": [],
    }  # fmt: skip


async def bare_loop(url: str, bodies: list[bytes], concurrency: int) -> None:
    secret = new_secret()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            headers = sign([secret], f"msg_{uuid.uuid4()}", int(time.time()), body)
            (await http.post(url, content=body, headers=headers)).raise_for_status()

    async with httpx.AsyncClient(timeout=5.0) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    n = args.messages
    work = Path(tempfile.mkdtemp(prefix="oddstream-webhooks-"))
    bootstrap, broker = kafka_for_benchmark(work)
    dispatcher = None
    try:
        settings = Settings(
            webhook_endpoint_concurrency=int(os.environ.get("ODDSTREAM_WEBHOOK_ENDPOINT_CONCURRENCY", "4")),
            kafka_bootstrap_servers=bootstrap, topic_prefix=f"hooks{uuid.uuid4().hex[:8]}.",
            data_dir=work / "data", webhook_allow_private_targets=True, development=True, log_level="warn",
        )  # fmt: skip
        ensure_topics(settings)
        receiver = Receiver()
        sample = payload_of(Event("OddsWindowUpdated", window(0)))  # the same bytes the dispatcher sends
        concurrency = settings.webhook_endpoint_concurrency  # ODDSTREAM_WEBHOOK_ENDPOINT_CONCURRENCY
        asyncio.run(bare_loop(receiver.url, [sample] * n, concurrency))
        bare = receiver.rate_of_last(n)
        print(f"bare httpx loop ({concurrency} in flight, signed):  {bare:10,.0f} deliveries/s")

        register_endpoint(settings, receiver.url, ["OddsWindowUpdated"], window_updates=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSTREAM_")}
        env.update({
            "ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ODDSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "ODDSTREAM_DATA_DIR": str(settings.data_dir), "ODDSTREAM_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
            "ODDSTREAM_DEVELOPMENT": "true", "ODDSTREAM_LOG_LEVEL": "info",
            "ODDSTREAM_WEBHOOK_ENDPOINT_CONCURRENCY": str(settings.webhook_endpoint_concurrency),
        })  # fmt: skip
        log = work / "dispatcher.log"
        dispatcher = subprocess.Popen(
            [sys.executable, "-m", "oddstream", "dispatcher"], env=env, stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while "dispatcher ready: 1 endpoint" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or dispatcher.poll() is not None:
                raise SystemExit(f"the dispatcher did not start; see {log}")
            time.sleep(0.2)
        before = len(receiver.arrived)
        with EventProducer(settings) as producer:
            for i in range(n):
                producer.publish("OddsWindowUpdated", window(i))
        deadline = time.monotonic() + 300
        while len(receiver.arrived) - before < n and time.monotonic() < deadline:
            time.sleep(0.2)
        delivered = len(receiver.arrived) - before
        rate = receiver.rate_of_last(delivered)
        print(
            f"oddstream dispatcher (one endpoint):       {rate:10,.0f} deliveries/s   ratio {rate / bare:.2f}"
        )
        print(f"delivered {delivered:,} of {n:,}")
        print(f"goals: >= 2,000 deliveries/s and >= 0.7x the bare loop: {rate:,.0f}/s, {rate / bare:.2f}x")
    finally:
        if dispatcher is not None:
            dispatcher.terminate()
            dispatcher.wait(30)
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()

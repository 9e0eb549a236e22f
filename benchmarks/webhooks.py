"""Webhook delivery rate: the dispatcher next to a bare async HTTP loop, same receiver, same run.

    make bench-webhooks      (python -m benchmarks.webhooks [--messages 10000])

1. A local receiver (aiohttp, its own process, answers 204) counts POSTs and when they came.
2. Baseline: a bare loop (aiohttp, the dispatcher's client library, the same number of
   requests in flight as one endpoint's lane) POSTs ``--messages`` Standard
   Webhooks-signed bodies of the same size to it; the same with httpx for reference.
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
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
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
    """An aiohttp endpoint in its own process (so it shares no interpreter lock with the
    sender being measured), counting what arrives; ``/stats`` tells how many and when."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.webhooks", "--serve", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stats(self) -> tuple[int, float, float]:
        """(deliveries so far, monotonic time of the first and of the last)."""
        answer = httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()
        return int(answer["count"]), float(answer["first"]), float(answer["last"])

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/reset", timeout=5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def serve(port: int) -> None:
    """The receiver process: 204 to every POST on /hooks."""
    state = {"count": 0, "first": 0.0, "last": 0.0}

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        now = time.monotonic()
        if not state["count"]:
            state["first"] = now
        state["count"] += 1
        state["last"] = now
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state)

    async def reset(request: web.Request) -> web.Response:
        state.update(count=0, first=0.0, last=0.0)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", receive)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def rate(receiver: Receiver, n: int, timeout_s: float = 300.0) -> tuple[int, float]:
    """Wait for ``n`` deliveries (or the timeout): (how many arrived, deliveries/s)."""
    deadline = time.monotonic() + timeout_s
    count, first, last = receiver.stats()
    while count < n and time.monotonic() < deadline:
        time.sleep(0.2)
        count, first, last = receiver.stats()
    return count, (count - 1) / (last - first) if count > 1 and last > first else 0.0


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


async def bare_loop(url: str, bodies: list[bytes], concurrency: int, library: str) -> None:
    """``concurrency`` workers POSTing the signed bodies with aiohttp (the dispatcher's client)
    or httpx (its client before), nothing else."""
    secret = new_secret()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def with_aiohttp(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            headers = sign([secret], f"msg_{uuid.uuid4()}", int(time.time()), body)
            async with http.post(url, data=body, headers=headers) as answer:
                answer.raise_for_status()

    async def with_httpx(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            headers = sign([secret], f"msg_{uuid.uuid4()}", int(time.time()), body)
            (await http.post(url, content=body, headers=headers)).raise_for_status()

    if library == "aiohttp":
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(with_aiohttp(session) for _ in range(concurrency)))
    else:
        async with httpx.AsyncClient(timeout=5.0) as client:
            await asyncio.gather(*(with_httpx(client) for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the receiver process
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    n = args.messages
    work = Path(tempfile.mkdtemp(prefix="oddstream-webhooks-"))
    bootstrap, broker = kafka_for_benchmark(work)
    dispatcher = None
    receiver: Receiver | None = None
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
        asyncio.run(bare_loop(receiver.url, [sample] * n, concurrency, "httpx"))
        _, bare_httpx = rate(receiver, n)
        receiver.reset()
        print(f"bare httpx loop ({concurrency} in flight, signed):    {bare_httpx:10,.0f}/s  (reference)")
        asyncio.run(bare_loop(receiver.url, [sample] * n, concurrency, "aiohttp"))
        _, bare = rate(receiver, n)
        receiver.reset()
        print(f"bare aiohttp loop ({concurrency} in flight, signed):  {bare:10,.0f}/s  (baseline)")

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
        with EventProducer(settings) as producer:
            for i in range(n):
                producer.publish("OddsWindowUpdated", window(i))
        delivered, real = rate(receiver, n)
        print(f"oddstream dispatcher (one endpoint):         {real:10,.0f}/s  ratio {real / bare:.2f}")
        print(f"delivered {delivered:,} of {n:,}")
        print(f"goals: >= 2,000 deliveries/s and >= 0.7x the bare loop: {real:,.0f}/s, {real / bare:.2f}x")
    finally:
        if receiver is not None:
            receiver.stop()
        if dispatcher is not None:
            dispatcher.terminate()
            dispatcher.wait(30)
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()

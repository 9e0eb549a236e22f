"""The gateway over real sockets: API keys, health, and the protocol's errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.server import run_gateway
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings

pytestmark = pytest.mark.integration


async def started(settings: Settings) -> asyncio.Task[None]:
    task = asyncio.create_task(run_gateway(settings))
    url = f"http://127.0.0.1:{settings.gateway_port}/healthz"
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            try:
                if (await client.get(url)).status_code == 200:
                    return task
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("gateway did not start")


async def test_api_keys_are_required_when_configured(settings: Settings) -> None:
    ensure_topics(settings)
    secured = settings.model_copy(update={"gateway_api_keys": [SecretStr("k-123")]})
    task = await started(secured)
    base = f"ws://127.0.0.1:{secured.gateway_port}/ws"
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            async with connect(base + "?api_key=wrong"):
                pass
        for url, headers in ((base + "?api_key=k-123", None), (base, {"Authorization": "Bearer k-123"})):
            async with connect(url, additional_headers=headers) as ws:
                assert json.loads(await ws.recv())["type"] == "welcome"
                await ws.send('{"op":"subscribe","channels":["secrets"]}')
                error = json.loads(await ws.recv())
                assert error["type"] == "error" and error["code"] == "unknown_channel"
                await ws.send('{"op":"ping"}')
                assert json.loads(await ws.recv()) == {"type": "pong"}
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{secured.gateway_port}/metrics")).text
        assert "oddstream_gateway_clients" in metrics
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

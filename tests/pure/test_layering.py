"""The pure core (schemas, streams) imports no I/O."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.pure
IO_MODULES = ["aiokafka", "confluent_kafka", "faust", "clickhouse_connect", "chdb", "websockets",
              "httpx", "aiohttp", "socket", "asyncio", "subprocess"]  # fmt: skip


def test_pure_core_imports_no_io_modules() -> None:
    code = (
        "import sys, pkgutil, importlib, schemas, streams\n"
        "for pkg in (schemas, streams):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        f"print([m for m in {IO_MODULES!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

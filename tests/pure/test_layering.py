"""The pure core (schemas, streams) imports no I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure
ROOT = Path(__file__).resolve().parents[2]
IO_MODULES = ["aiokafka", "confluent_kafka", "faust", "clickhouse_connect", "chdb", "websockets",
              "httpx", "aiohttp", "socket", "asyncio", "subprocess"]  # fmt: skip
# River's numerical stack imports socket and subprocess itself; the models use River.
THIRD_PARTY_BASELINE = (
    "import river.anomaly, river.compose, river.drift, river.linear_model, river.preprocessing"
)


def test_pure_core_names_no_io_module() -> None:
    for path in [*ROOT.glob("schemas/**/*.py"), *ROOT.glob("streams/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & set(IO_MODULES), f"{path} imports I/O: {names}"


def test_pure_core_pulls_in_no_io_modules() -> None:
    code = (
        f"import sys, pkgutil, importlib\n{THIRD_PARTY_BASELINE}\n"
        f"before = set(sys.modules)\n"
        "import schemas, streams\n"
        "for pkg in (schemas, streams):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        f"print([m for m in {IO_MODULES!r} if m in sys.modules and m not in before])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_producer_sdk_does_not_load_the_analytics_stack() -> None:
    """A producer embeds `oddstream.producer`: River, numpy, scipy, pandas and Faust stay out."""
    heavy = ("river", "numpy", "scipy", "pandas", "faust", "streams.processor", "aiokafka")
    code = f"import sys, oddstream.producer; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout

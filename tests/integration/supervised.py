"""`oddstream up` as a test runs it: every role supervised, on the test broker and ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from oddstream.cli import _pid_alive
from oddstream.settings import Settings
from tests.integration.roles import environment, wait_for

ROLES = ("store", "worker", "gateway", "api", "dispatcher", "receiver")


class Up:
    """``oddstream up`` (``--no-simulate`` unless asked) in its own process group, output to ``up.log``."""

    def __init__(self, settings: Settings, *args: str, simulate: bool = False) -> None:
        self.settings = settings
        self.log = Path(settings.data_dir) / "up.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oddstream", "up", *([] if simulate else ["--no-simulate"]), *args],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=environment(self.settings),
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        """`oddstream status --output json`, as an operator reads it."""
        done = subprocess.run(
            [sys.executable, "-m", "oddstream", "status", "--output", "json"],
            env=environment(self.settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def role(self, name: str) -> dict[str, Any]:
        return next(r for r in self.status()["roles"] if r["role"] == name)

    def wait_ready(self, timeout_s: float = 120) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"oddstream up exited:\n{self.output()[-3000:]}")
            if "oddstream is up" not in self.output():
                return False
            try:
                return httpx.get(f"{self.settings.sql_endpoint}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("oddstream up", ready, timeout_s)
        logs = Path(self.settings.data_dir) / "logs"
        wait_for(
            "the dispatcher and gateway to consume",
            lambda: (
                "dispatcher ready" in _text(logs / "dispatcher.log")
                and "gateway consuming" in _text(logs / "gateway.log")
            ),
            90,
        )

    def kill(self, role: str, signum: int = signal.SIGKILL) -> int:
        pid = int(self.role(role)["pid"])
        os.kill(pid, signum)
        return pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def stop_times(pids: dict[str, int], timeout_s: float) -> dict[str, float | None]:
    """Seconds from now until each process is gone (None: it outlived ``timeout_s``), polled
    together, so each role's time is its own."""
    started = time.monotonic()
    took: dict[str, float | None] = dict.fromkeys(pids)
    while time.monotonic() - started < timeout_s and any(t is None for t in took.values()):
        for role, pid in pids.items():
            if took[role] is None and _exited(pid):
                took[role] = time.monotonic() - started
        time.sleep(0.02)
    return took


def _exited(pid: int) -> bool:
    return not _pid_alive(pid)  # a zombie has exited too; `up` reaps it on its next round

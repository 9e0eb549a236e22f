"""Run oddstream roles as real processes for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from oddstream.settings import Settings


def environment(settings: Settings) -> dict[str, str]:
    """The settings as the ODDSTREAM_* variables a child process reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSTREAM_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, list | tuple):  # pydantic-settings reads lists from JSON
            secret = [v.get_secret_value() if hasattr(v, "get_secret_value") else v for v in value]
            env[f"ODDSTREAM_{name.upper()}"] = json.dumps(secret)
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"ODDSTREAM_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class Role:
    def __init__(self, settings: Settings, *args: str, name: str = "") -> None:
        """``python -m oddstream *args``, its output appended to logs/<name or args[0]>.log."""
        self.log = Path(settings.data_dir) / "logs" / f"{name or args[0]}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oddstream", *args],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=environment(settings),
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


class RestartingRole(Role):
    """A role restarted when it exits with ``restart_code``, as `oddstream up` would: the
    worker's stall watchdog exits with 3 for exactly that (consumers/worker/app.py)."""

    def __init__(self, settings: Settings, *args: str, restart_code: int = 3) -> None:
        super().__init__(settings, *args)
        self.settings, self.args, self.restart_code = settings, args, restart_code
        self.restarts = 0

    def alive(self) -> bool:
        if self.process.poll() == self.restart_code:
            self.restarts += 1
            print(f"\n{self.args[0]} exited with {self.restart_code}; restarting it (#{self.restarts})")
            Role.__init__(self, self.settings, *self.args)
        return self.process.poll() is None


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, roles: Sequence[Role] = ()) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the roles' logs if it does not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for role in roles:
            if not role.alive():
                raise AssertionError(f"{role.log.stem} exited while waiting for {what}:\n{role.output()}")
        result = check()
        if result:
            return result
        time.sleep(0.25)
    logs = "\n".join(f"--- {r.log.stem}\n{r.output()}" for r in roles)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")


def http_role(settings: Settings, role: str, url: str) -> Role:
    """Start an HTTP role and return once ``url``/healthz answers 200 (fails with its log if not)."""
    import httpx

    started = Role(settings, role)

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(f"the {role} at {url}", answers, 60, [started])
    return started

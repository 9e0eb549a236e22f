"""`oddstream up` keeps the stack running: a role that dies is restarted and counted, every role
stops within 5 s of SIGTERM or SIGINT, and a crash-looping role stops everything with its reason."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest

from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.topics import Topics
from tests.integration.roles import wait_for
from tests.integration.supervised import ROLES, Up, stop_times

pytestmark = pytest.mark.integration
STOP_WITHIN_S = 5.0


def supervised(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_receiver_port": free_port()})


def test_up_restarts_a_killed_role_and_every_role_stops_within_5_s(settings: Settings) -> None:
    settings = supervised(settings)
    ensure_topics(settings)
    up = Up(settings)
    try:
        up.wait_ready()
        with EventProducer(settings) as producer:  # some traffic, so the store commits offsets
            for n in range(50):
                producer.publish("UserActivity", {
                    "event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000) - 1_000,
                    "source": "test", "user_id": f"u{n}", "activity": "LOGIN", "amount": None,
                    "currency": None,
                })  # fmt: skip
        status = up.status()
        assert status["alive"] and {r["role"] for r in status["roles"]} == set(ROLES)
        assert all(r["state"] == "running" and r["restarts"] == 0 for r in status["roles"])

        killed = up.kill("worker")
        wait_for(
            "the worker restarted",
            lambda: (
                (w := up.role("worker"))["restarts"] == 1 and w["state"] == "running" and w["pid"] != killed
            ),
            60,
        )
        assert "worker exited (code -9)" in up.output() and "restarting worker (restart #1)" in up.output()
        worker_log = (settings.data_dir / "logs" / "worker.log").read_text(errors="replace")
        assert "oddstream up: worker exited (code -9)" in worker_log  # said in the role's own log too

        pids: dict[str, int] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            signalled = set(pids.values())  # the last round's: every role must be a new process
            wait_for(
                "every role running anew",
                lambda signalled=signalled: all(  # type: ignore[misc]
                    r["state"] == "running" and r["pid"] not in signalled for r in up.status()["roles"]
                ),
                90,
            )
            pids = {r["role"]: int(r["pid"]) for r in up.status()["roles"]}
            time.sleep(3)  # past start-up: a role stops from its steady state
            for role, pid in pids.items():
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:  # it exited on its own since `up` said it was running
                    said = f"{up.status()}\n{up.output()[-4000:]}"
                    raise AssertionError(f"{role} (pid {pid}) exited before {signum.name}: {said}") from None
            took = stop_times(pids, 15)
            slow = {role: t for role, t in took.items() if t is None or t > STOP_WITHIN_S}
            assert not slow, f"roles slower than {STOP_WITHIN_S} s to stop on {signum.name}: {slow}"
            print(
                f"\n{signum.name}: " + ", ".join(f"{r} {t:.2f} s" for r, t in took.items() if t is not None)
            )

        wait_for("every role back", lambda: all(r["state"] == "running" for r in up.status()["roles"]), 90)
        status = up.status()
        restarts = {r["role"]: r["restarts"] for r in status["roles"]}
        assert restarts["worker"] == 3 and all(restarts[r] == 2 for r in ROLES if r != "worker"), restarts
        wait_for("the store caught up", lambda: up.role("store")["lag"] == 0, 60)
        assert up.process.poll() is None, "up carried on through every exit"
    finally:
        up.stop()
    assert up.process.returncode == 0 and "stopped." in up.output()


def test_a_crash_looping_role_stops_everything_and_says_why(settings: Settings) -> None:
    settings = supervised(settings)
    ensure_topics(settings)
    taken = socket.socket()
    taken.bind((settings.gateway_host, settings.gateway_port))  # the gateway cannot listen: it exits
    taken.listen()
    up = Up(settings)
    try:
        up.process.wait(180)
        assert up.process.returncode == 1, up.output()[-3000:]
        assert "stopping everything: gateway exited 5 times within 120 s (crash loop)" in up.output()
        assert up.output().count("restarting gateway") == 4
        assert "stopped." in up.output()
    finally:
        up.stop()
        taken.close()


def test_up_with_two_workers_splits_the_partitions_and_restarts_a_killed_one(settings: Settings) -> None:
    settings = settings.model_copy(update={"worker_metrics_port": free_port()})
    up = Up(settings, "--workers", "2", simulate=True)
    try:
        up.wait_ready()
        roles = {r["role"] for r in up.status()["roles"]}
        assert {"worker-1", "worker-2"} <= roles and "worker" not in roles
        logs = Path(settings.data_dir) / "logs"
        topics = Topics(settings.topic_prefix)

        def owned(worker: str) -> set[int]:
            text = (logs / f"{worker}.log").read_text(errors="replace")
            return {p for p in range(settings.topic_partitions) if f"{topics.odds}[{p}]: no snapshot" in text
                    or f"{topics.odds}[{p}]: restored snapshot" in text}  # fmt: skip

        wait_for(
            "both workers to own odds partitions",
            lambda: owned("worker-1") and owned("worker-2")
            and owned("worker-1") | owned("worker-2") == set(range(settings.topic_partitions)),
            120,
        )  # fmt: skip
        rows = "SELECT count() FROM odds_windows_1m"
        wait_for("window rows", lambda: httpx.post(f"{settings.sql_endpoint}/sql", content=rows, timeout=30)
                 .json()["rows"][0][0] > 0, 120)  # fmt: skip
        killed = up.kill("worker-1")
        wait_for("worker-1 restarted", lambda: up.role("worker-1")["pid"] not in (None, killed)
                 and up.role("worker-1")["state"] == "running", 60)  # fmt: skip
        assert up.role("worker-2")["restarts"] == 0
        assert up.role("worker-2")["lag"] is not None  # the group's lag, shown for each worker
    finally:
        up.stop()


def test_status_counts_an_exited_role_that_up_has_not_reaped_yet_as_gone() -> None:
    """A role that exited is a zombie until `up` reaps it on its next round; signals still reach
    its pid, but `oddstream status` must not call it running (a test that took its pid as
    running signalled it after `up` had reaped it)."""
    import subprocess
    import sys

    from oddstream.cli import _pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for(
            "the child to exit",
            lambda: Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] == "Z",
            30,
        )
        os.kill(child.pid, 0)  # still there for signals...
        assert not _pid_alive(child.pid)  # ... but not running
    finally:
        child.wait()
    assert not _pid_alive(child.pid)
    assert _pid_alive(os.getpid())

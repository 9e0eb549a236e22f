"""`oddstream up` keeps the stack running: a role that dies is restarted and counted, every role
stops within 5 s of SIGTERM or SIGINT, and a crash-looping role stops everything with its reason."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import pytest

from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
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

        for signum in (signal.SIGTERM, signal.SIGINT):
            wait_for(
                "every role running", lambda: all(r["state"] == "running" for r in up.status()["roles"]), 90
            )
            pids = {r["role"]: int(r["pid"]) for r in up.status()["roles"]}
            time.sleep(3)  # past start-up: a role stops from its steady state
            for pid in pids.values():
                os.kill(pid, signum)
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

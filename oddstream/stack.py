"""``oddstream up``: the whole stack on one machine, each role in its own process.

Starts (or reuses) Kafka, creates topics, then runs store, worker, gateway,
dispatcher, a demo webhook receiver and the simulator as child processes with
logs under ``<data_dir>/logs``. Ctrl-C stops them in reverse order, then the
broker if this command started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.broker import LocalKafka, kafka_is_healthy
from oddstream.errors import BrokerError
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings

RECEIVER_PORT = 8899


@dataclass
class Stack:
    settings: Settings
    broker: LocalKafka | None = None
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.settings.data_dir.resolve() / "logs"

    def start_broker(self) -> None:
        if self.settings.kafka_bootstrap_servers:
            if not kafka_is_healthy(self.settings.bootstrap, 10):
                raise BrokerError(f"Kafka at {self.settings.bootstrap} does not answer")
            return
        if kafka_is_healthy(self.settings.bootstrap, 2):
            return  # a local broker from an earlier run is still up: reuse it
        self.broker = LocalKafka(self.settings.data_dir / "kafka", port=self.settings.local_kafka_port)
        self.broker.start()

    def spawn(self, role: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / f"{role}.log").open("ab")
        child_env = {**os.environ, **self.environment(), **(env or {})}
        process = subprocess.Popen(
            [sys.executable, "-m", "oddstream", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
        )
        self.children.append((role, process))

    def environment(self) -> dict[str, str]:
        s = self.settings
        return {
            "ODDSTREAM_DATA_DIR": str(s.data_dir.resolve()),
            "ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS": s.bootstrap,
            "ODDSTREAM_TOPIC_PREFIX": s.topic_prefix,
            "ODDSTREAM_CLICKHOUSE_DSN": s.clickhouse,
            "ODDSTREAM_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        }

    def stop(self) -> None:
        for _role, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for role, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{role} did not stop within 20 s; killing it", flush=True)
                process.kill()
        if self.broker is not None:
            self.broker.stop()

    def exited(self) -> list[str]:
        return [f"{role} (exit {p.returncode})" for role, p in self.children if p.poll() is not None]


def run_stack(settings: Settings, simulate: bool = True) -> None:
    from consumers.dispatcher.endpoints import register_endpoint

    stack = Stack(settings)
    print("starting Kafka ...", flush=True)
    stack.start_broker()
    ensure_topics(settings)
    try:
        stack.spawn("store", "store")
        stack.spawn("worker", "worker")
        stack.spawn("gateway", "gateway")
        stack.spawn("dispatcher", "dispatcher")
        receiver_url = f"http://127.0.0.1:{RECEIVER_PORT}/hooks/oddstream"
        _endpoint_id, secret = register_endpoint(
            settings.model_copy(update={"webhook_allow_private_targets": True}),
            receiver_url,
            ["OddsWindowUpdated", "AlertChanged"],
            endpoint_id="ep_local_demo",
        )
        stack.spawn("receiver", "webhook", "listen", "--port", str(RECEIVER_PORT), "--secret", secret)
        if simulate:
            stack.spawn("simulator", "simulate", "--no-progress")
        print_where_to_look(settings, stack, receiver_url)
        while True:
            time.sleep(1)
            gone = stack.exited()
            if gone:
                print(f"stopping: {', '.join(gone)} exited; see {stack.logs}", flush=True)
                raise SystemExit(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        stack.stop()
        print("stopped.", flush=True)


def print_where_to_look(settings: Settings, stack: Stack, receiver_url: str) -> None:
    s = settings
    kafka = f"{s.bootstrap} (local broker, data in {stack.broker.data_dir})" if stack.broker else s.bootstrap
    subscribe = '{"op":"subscribe","channels":["markets"]}'
    print(
        f"""
oddstream is up.
  Kafka               {kafka}
  WebSocket           ws://{s.gateway_host}:{s.gateway_port}/ws   send {subscribe}
  SQL (read-only)     oddstream sql "SELECT count() FROM odds_windows_1m"   ({s.sql_endpoint}/sql)
  Webhook receiver    {receiver_url}  deliveries: {stack.logs / "webhook-received.jsonl"}
  Delivery log        {stack.logs / "webhook-deliveries.jsonl"}
  Logs                {stack.logs}/<role>.log
Ctrl-C stops everything.
""",
        flush=True,
    )

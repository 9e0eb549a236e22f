"""``oddstream up``: the whole stack on one machine, each role in its own process.

Starts (or reuses) Kafka, creates topics, then runs store, worker, gateway,
dispatcher, a demo webhook receiver and the simulator as child processes with
logs under ``<data_dir>/logs``. A role that exits is restarted with backoff
(:mod:`oddstream.supervision`); one that crash-loops stops everything. Ctrl-C (or
SIGTERM to `up`) sends SIGTERM to every role, newest first, then stops the broker if
this command started it. `oddstream status` reads ``<data_dir>/run/stack.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.broker import LocalCluster, LocalKafka, kafka_is_healthy, local_kafka
from infra.registry import LocalRegistry, registry_is_healthy
from oddstream.errors import BrokerError, OddstreamError, SchemaRegistryError
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings
from oddstream.supervision import GiveUp, RestartPolicy, RoleRestarts

STOP_TIMEOUT_S = 10.0  # every role stops within 5 s of SIGTERM (tested); this is the margin


@dataclass
class Child:
    """One role process under supervision."""

    role: str
    args: tuple[str, ...]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # time.time() of the current run
    restart_at: float | None = None  # monotonic time of a scheduled restart
    history: RoleRestarts = field(default_factory=RoleRestarts)
    last_exit: int | None = None


@dataclass
class Stack:
    settings: Settings
    broker: LocalKafka | LocalCluster | None = None
    registry: LocalRegistry | None = None
    children: list[Child] = field(default_factory=list)
    policy: RestartPolicy = field(default_factory=RestartPolicy)

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
        self.broker = local_kafka(self.settings)
        self.broker.start()

    def start_registry(self) -> None:
        """The registry named by the settings (it must answer), or a local one: reused if one
        answers on the local port, else started, and stopped with the stack."""
        url = self.settings.schema_registry_url
        if url:
            if not registry_is_healthy(url, 10):
                raise SchemaRegistryError(f"the Schema Registry at {url} does not answer GET /subjects")
            return
        local = LocalRegistry(self.settings.data_dir / "registry", port=self.settings.local_registry_port)
        if not registry_is_healthy(local.url):
            local.start()
            self.registry = local
        self.settings = self.settings.model_copy(update={"schema_registry_url": local.url})

    def spawn(self, role: str, *args: str, env: dict[str, str] | None = None) -> None:
        child = Child(role, args, env or {})
        self.children.append(child)
        self._start(child)

    def _start(self, child: Child) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / f"{child.role}.log").open("ab")
        child_env = {**os.environ, **self.environment(), **child.env}
        child.process = subprocess.Popen(
            [sys.executable, "-m", "oddstream", *child.args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
        )
        child.started, child.restart_at = time.time(), None
        self.write_status()

    def environment(self) -> dict[str, str]:
        s = self.settings
        env = {
            "ODDSTREAM_DATA_DIR": str(s.data_dir.resolve()),
            "ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS": s.bootstrap,
            "ODDSTREAM_TOPIC_PREFIX": s.topic_prefix,
            "ODDSTREAM_CLICKHOUSE_DSN": s.clickhouse,
            "ODDSTREAM_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
            "ODDSTREAM_DEVELOPMENT": "true",
        }
        if s.schema_registry_url:
            env["ODDSTREAM_SCHEMA_REGISTRY_URL"] = s.schema_registry_url
        return env

    def supervise(self) -> None:
        """Restart roles that exited (with backoff); raise :class:`CrashLoop` when one loops."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._say(child, f"restarting {child.role} (restart #{child.history.restarts})")
                    self._start(child)
                continue
            if process is None or process.poll() is None:
                continue
            child.last_exit = process.returncode
            ran = time.time() - child.started
            decision = self.policy.on_exit(child.history, now, ran)
            if isinstance(decision, GiveUp):
                self._say(child, f"{child.role} exited (code {process.returncode}) and {decision.reason}")
                raise CrashLoop(f"{child.role} {decision.reason}; see {self.logs / child.role}.log")
            child.restart_at = now + decision.after_s
            self._say(
                child,
                f"{child.role} exited (code {process.returncode}) after {ran:.1f} s; "
                f"restarting in {decision.after_s:g} s",
            )
            self.write_status()

    def _say(self, child: Child, text: str) -> None:
        """On the terminal and in the role's own log."""
        line = f"{time.strftime('%H:%M:%S')} oddstream up: {text}"
        print(line, flush=True)
        with (self.logs / f"{child.role}.log").open("a") as fh:
            fh.write(line + "\n")

    def stop(self) -> None:
        """SIGTERM to every role, newest first; SIGKILL to any still running after the timeout."""
        for child in reversed(self.children):
            child.restart_at = None
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(
                    f"{child.role} did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM; killing it",
                    flush=True,
                )
                child.process.kill()
                child.process.wait()
        status_path(self.settings).unlink(missing_ok=True)
        if self.registry is not None:
            self.registry.stop()
        if self.broker is not None:
            self.broker.stop()

    def write_status(self) -> None:
        """What `oddstream status` reads: this supervisor and each role's process."""
        roles = {}
        for child in self.children:
            running = child.process is not None and child.process.poll() is None
            roles[child.role] = {
                "pid": child.process.pid if child.process is not None else None,
                "state": "running" if running else "restarting" if child.restart_at else "exited",
                "started": child.started,
                "restarts": child.history.restarts,
                "last_exit": child.last_exit,
            }
        path = status_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"supervisor": os.getpid(), "roles": roles}, indent=1))
        temporary.replace(path)


class CrashLoop(OddstreamError):
    """A role exited too often in too short a time; `up` stops everything."""


def status_path(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "run" / "stack.json"


def run_stack(
    settings: Settings, simulate: bool = True, schema_registry: bool = False, workers: int = 1
) -> None:
    from consumers.dispatcher.endpoints import register_endpoint

    stack = Stack(settings)
    print("starting Kafka ...", flush=True)
    stack.start_broker()
    ensure_topics(settings)
    try:
        if schema_registry or settings.schema_registry_url:
            print("starting the Schema Registry ...", flush=True)
            stack.start_registry()
            settings = stack.settings
        stack.spawn("store", "store")
        if workers == 1:
            stack.spawn("worker", "worker")
        else:  # one consumer group: Kafka splits the partitions between them
            for i in range(1, workers + 1):
                port = settings.worker_metrics_port + 10 * (i - 1) if settings.worker_metrics_port else 0
                stack.spawn(f"worker-{i}", "worker", env={"ODDSTREAM_WORKER_METRICS_PORT": str(port)})
        stack.spawn("gateway", "gateway")
        stack.spawn("api", "api")
        stack.spawn("dispatcher", "dispatcher")
        port = settings.webhook_receiver_port
        receiver_url = f"http://127.0.0.1:{port}/hooks/oddstream"
        _endpoint_id, secret = register_endpoint(
            settings.model_copy(update={"webhook_allow_private_targets": True}),
            receiver_url,
            ["OddsWindowUpdated", "AlertChanged"],
            endpoint_id="ep_local_demo",
        )
        stack.spawn("receiver", "webhook", "listen", "--port", str(port), "--secret", secret)
        if simulate:
            stack.spawn("simulator", "simulate", "--no-progress")
        print_where_to_look(settings, stack, receiver_url)
        while True:
            time.sleep(0.5)
            stack.supervise()
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    except CrashLoop as exc:
        print(f"stopping everything: {exc}", flush=True)
        raise SystemExit(1) from exc
    finally:
        stack.stop()
        print("stopped.", flush=True)


def print_where_to_look(settings: Settings, stack: Stack, receiver_url: str) -> None:
    s = settings
    kafka = f"{s.bootstrap} (local broker, data in {stack.broker.data_dir})" if stack.broker else s.bootstrap
    framing = (
        f"Confluent frames, registry {s.schema_registry_url}" if s.schema_registry_url else "single-object"
    )
    subscribe = '{"op":"subscribe","channels":["markets"]}'
    print(
        f"""
oddstream is up.
  Dashboard           http://{s.gateway_host}:{s.gateway_port}/   (markets, alerts, predictions, health)
  Kafka               {kafka}
  Avro framing        {framing}
  WebSocket           ws://{s.gateway_host}:{s.gateway_port}/ws   send {subscribe}
  HTTP API            http://{s.api_host}:{s.api_port}/v1/events   (ingest; webhook endpoints; /openapi.json)
  SQL (read-only)     oddstream sql "SELECT count() FROM odds_windows_1m"   ({s.sql_endpoint}/sql)
  Webhook receiver    {receiver_url}  deliveries: {stack.logs / "webhook-received.jsonl"}
  Delivery log        {stack.logs / "webhook-deliveries.jsonl"}
  Logs                {stack.logs}/<role>.log
Ctrl-C stops everything.
""",
        flush=True,
    )

"""A real single-node Apache Kafka broker in KRaft mode, without Docker.

Maven resolves the broker jars (``infra/kafka/pom.xml``) into ~/.m2 once; the
resolved classpath is cached under the data directory. The broker is formatted
on first start, health-checked (a metadata request must succeed) before use
and stopped with SIGTERM (a controlled shutdown), SIGKILL only if it hangs.

Example::

    broker = LocalKafka(Path(".oddstream/kafka"), port=9092)
    broker.start()          # returns once clients can connect
    ...
    broker.stop()
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from oddstream.errors import BrokerError

if TYPE_CHECKING:
    from oddstream.settings import Settings

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout_s``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kafka_is_healthy(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a metadata request to ``bootstrap`` succeeds."""
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not port_is_open(host or "127.0.0.1", int(port)):
        return False  # no listener: do not let librdkafka retry and log for seconds
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout_s * 1000)})
    try:
        admin.list_topics(timeout=timeout_s)
        return True
    except Exception:
        return False


# what a three-node cluster sets so that losing one node loses nothing acknowledged
# (docker-compose.yml's brokers set the same; tests/pure/test_compose.py checks it)
REPLICATED = {
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "min.insync.replicas": "2",
    "default.replication.factor": "3",
}


class LocalKafka:
    """One broker+controller node listening on 127.0.0.1:``port`` (controller on port+1):
    a single-node cluster, or node ``node_id`` of a :class:`LocalCluster` (``voters``)."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        heap: str = "768m",
        cluster_id: str | None = None,
        node_id: int = 1,
        voters: str | None = None,
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.cluster_id = cluster_id or base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self.port = port
        self.controller_port = port + 1
        self.heap = heap
        self.node_id = node_id
        self.voters = voters
        self.overrides = overrides or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    # -- jars --------------------------------------------------------------

    def classpath(self) -> str:
        """The broker classpath, resolved by Maven on first use and cached."""
        cached = self.data_dir / "classpath.txt"
        pom = KAFKA_DIR / "pom.xml"
        if cached.exists() and cached.stat().st_mtime >= pom.stat().st_mtime:
            entries = cached.read_text().strip().split(os.pathsep)
            if entries and all(Path(e).exists() for e in entries):
                return cached.read_text().strip()
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is not on PATH; it is needed to fetch the Kafka jars")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={cached}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not cached.exists():
            raise BrokerError(f"Maven could not resolve the Kafka jars:\n{result.stdout}{result.stderr}")
        return cached.read_text().strip()

    # -- lifecycle ----------------------------------------------------------

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java is not on PATH; the local broker needs Java 17")
        log4j = KAFKA_DIR / "log4j2.properties"
        return [
            java,
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp",
            self.classpath(),
            main,
            *args,
        ]

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        lines = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            **(
                {"controller.quorum.voters": self.voters}
                if self.voters
                else {"controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}"}
            ),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "num.partitions": "6",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
            **self.overrides,
        }
        config.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        return config

    def _format_once(self, config: Path) -> None:
        if (self.data_dir / "data" / "meta.properties").exists():
            return
        result = subprocess.run(
            # "--cluster-id=<id>": a URL-safe base64 id may start with "-", which argparse
            # would take for an option if passed as a separate argument
            self._java(
                STORAGE_TOOL,
                "format",
                f"--cluster-id={self.cluster_id}",
                "-c",
                str(config),
                *([] if self.voters else ["--standalone"]),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting the KRaft storage failed:\n{result.stdout}{result.stderr}")

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the broker and return once it answers metadata requests."""
        self.launch()
        self.wait_healthy(timeout_s)

    def launch(self) -> None:
        """Start the process (formatting its storage the first time); do not wait."""
        if port_is_open("127.0.0.1", self.port):
            raise BrokerError(f"port {self.port} is already in use; set ODDSTREAM_LOCAL_KAFKA_PORT")
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._format_once(config)
        stdout = (self.data_dir / "logs" / "stdout.log").open("ab")
        self._process = subprocess.Popen(
            self._java(KAFKA_MAIN, str(config)),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        (self.data_dir / "broker.pid").write_text(str(self._process.pid))

    def wait_healthy(self, timeout_s: float = 90.0) -> None:
        """Return once the node answers metadata requests; stop it and raise if it does not."""
        assert self._process is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"Kafka exited with code {self._process.returncode} during start; see {self.log_file}"
                )
            if port_is_open("127.0.0.1", self.port) and kafka_is_healthy(self.bootstrap, 2.0):
                return
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"Kafka did not become healthy within {timeout_s:.0f} s; see {self.log_file}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL if it has not exited in ``timeout_s``."""
        process, self._process = self._process, None
        stop_process(process, timeout_s)
        (self.data_dir / "broker.pid").unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crashed machine (tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


class LocalCluster:
    """``nodes`` combined broker+controller nodes with a static quorum, from the same jars:
    node i listens on ``ports[i]`` (its controller on the next port). With three nodes the
    internal topics are replicated three times with two in sync (:data:`REPLICATED`), so one
    node can be lost. Started together (a quorum needs a majority), healthy when every
    broker is registered; stopped together."""

    def __init__(self, data_dir: Path, ports: list[int], heap: str = "512m") -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        voters = ",".join(f"{i}@127.0.0.1:{port + 1}" for i, port in enumerate(ports, 1))
        overrides = REPLICATED if len(ports) >= 3 else {}
        self.nodes = [
            LocalKafka(data_dir.resolve() / f"node-{i}", port, heap, cluster_id, i, voters, overrides)
            for i, port in enumerate(ports, 1)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def data_dir(self) -> Path:
        return self.nodes[0].data_dir.parent

    def start(self, timeout_s: float = 120.0) -> None:
        self.nodes[0].classpath()  # Maven once, before three JVMs ask for it
        for node in self.nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            (node.data_dir / "classpath.txt").write_text(self.nodes[0].classpath())
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_healthy(timeout_s)
            self.wait_brokers(len(self.nodes), timeout_s)
        except BrokerError:
            self.stop()
            raise

    def wait_brokers(self, count: int, timeout_s: float = 60.0) -> None:
        """Until the cluster's metadata lists ``count`` brokers."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if len(admin.list_topics(timeout=5).brokers) >= count:
                    return
            except Exception:  # a node still starting
                pass
            time.sleep(0.5)
        raise BrokerError(f"the cluster did not register {count} brokers within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 30.0) -> None:
        for node in self.nodes:
            if node.running:
                node._process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for node in self.nodes:
            node.stop(timeout_s)

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)


def local_kafka(settings: Settings) -> LocalKafka | LocalCluster:
    """The local broker the settings ask for: one node, or a cluster of ``local_kafka_nodes``."""
    if settings.local_kafka_nodes == 1:
        return LocalKafka(settings.data_dir / "kafka", port=settings.local_kafka_port)
    return LocalCluster(settings.data_dir / "kafka-cluster", settings.local_kafka_ports)

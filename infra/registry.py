"""A real Schema Registry on this machine: Apicurio Registry 2.6, without Docker.

Maven fetches Apicurio's distribution (``io.apicurio:apicurio-registry-app``,
classifier ``all``, a tar.gz of about 142 MB) into ~/.m2 once; it is unpacked once per
machine under ~/.cache/oddstream (``$XDG_CACHE_HOME``) and started with Java 17. Its
storage is an H2 database *file* under the data directory (not the distribution's
in-memory default), so schema ids survive a restart: the ids in the records on the
topics keep meaning the same schema. It serves the Confluent-compatible API at
``/apis/ccompat/v7`` (register, get by id, subjects, versions, per-subject
compatibility, HTTP 409 on an incompatible schema), which is all oddstream and
Confluent's clients use.

Example::

    registry = LocalRegistry(Path(".oddstream/registry"), port=8081)
    registry.start()          # returns once the ccompat API answers
    print(registry.url)       # http://127.0.0.1:8081/apis/ccompat/v7
    registry.stop()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from infra.broker import port_is_open, stop_process
from oddstream.errors import SchemaRegistryError

APICURIO_VERSION = "2.6.13.Final"
APICURIO_ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
RUNNER_JAR = f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
CCOMPAT_PATH = "/apis/ccompat/v7"
# Shared with docker-compose.yml's registry service (a test checks that they agree).
REGISTRY_SETTINGS = {
    "REGISTRY_RULES_GLOBAL_COMPATIBILITY": "BACKWARD_TRANSITIVE",
    "ENABLE_CCOMPAT_LEGACY_ID_MODE": "false",
}


def registry_is_healthy(url: str, timeout_s: float = 2.0) -> bool:
    """True when ``url`` (a ccompat base URL) answers ``GET /subjects`` with 200."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/subjects", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oddstream" / "apicurio-registry"


class LocalRegistry:
    """One Apicurio Registry process on 127.0.0.1:``port``, state in ``data_dir``."""

    def __init__(
        self, data_dir: Path, port: int = 8081, heap: str = "384m", cache_dir: Path | None = None
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.cache_dir = (cache_dir or default_cache_dir()).resolve()
        self.port = port
        self.heap = heap
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "registry.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "registry.pid"

    # -- files ---------------------------------------------------------------

    def runner(self) -> Path:
        """The runnable jar, fetched by Maven and unpacked on first use."""
        dist = self.cache_dir / APICURIO_VERSION
        jar = dist / RUNNER_JAR
        if jar.exists() and (dist / "lib").is_dir():
            return jar
        mvn = shutil.which("mvn")
        if mvn is None:
            raise SchemaRegistryError("Maven (mvn) is not on PATH; it is needed to fetch the registry")
        download = self.cache_dir / f"download-{os.getpid()}"
        download.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
                f"-Dartifact={APICURIO_ARTIFACT}",
                f"-DoutputDirectory={download}",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=download,
        )
        archives = sorted(download.glob("apicurio-registry-app-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise SchemaRegistryError(
                f"Maven could not fetch {APICURIO_ARTIFACT}:\n{result.stdout}{result.stderr}"
            )
        staging = dist.with_name(f"{dist.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(archives[-1]) as archive:
            archive.extractall(staging, filter="data")
        shutil.rmtree(download)  # Maven keeps its own copy in ~/.m2
        if jar.exists():  # another process unpacked it meanwhile
            shutil.rmtree(staging)
        else:
            shutil.rmtree(dist, ignore_errors=True)
            staging.rename(dist)
        return jar

    # -- lifecycle -------------------------------------------------------------

    def command(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise SchemaRegistryError("java is not on PATH; the local registry needs Java 17")
        return [
            java,
            f"-Xmx{self.heap}",
            "-Djava.awt.headless=true",
            f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.http.host=127.0.0.1",
            "-jar",
            str(self.runner()),
        ]

    def environment(self) -> dict[str, str]:
        database = self.data_dir / "db" / "registry"
        return {
            **os.environ,
            **REGISTRY_SETTINGS,
            # a file, not the distribution's jdbc:h2:mem default: ids outlive a restart; and no
            # write delay, so a registration survives a SIGKILL right after it (measured: with
            # H2's default delay the last one was lost)
            "REGISTRY_DATASOURCE_URL": f"jdbc:h2:file:{database};WRITE_DELAY=0",
        }

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the registry and return once its ccompat API answers."""
        if port_is_open("127.0.0.1", self.port):
            raise SchemaRegistryError(
                f"port {self.port} is already in use; set ODDSTREAM_LOCAL_REGISTRY_PORT"
            )
        command = self.command()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            cwd=self.data_dir,
            start_new_session=True,
        )
        self.pid_file.write_text(str(self._process.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise SchemaRegistryError(
                    f"the registry exited with code {self._process.returncode} during start; "
                    f"see {self.log_file}"
                )
            if registry_is_healthy(self.url, 1.0):
                return
            time.sleep(0.3)
        self.stop()
        raise SchemaRegistryError(
            f"the registry did not answer within {timeout_s:.0f} s; see {self.log_file}"
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (Quarkus shuts down cleanly); SIGKILL if it has not exited in ``timeout_s``."""
        process, self._process = self._process, None
        stop_process(process, timeout_s)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, for tests of a registry that vanishes."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.pid_file.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

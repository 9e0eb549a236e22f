"""docker-compose.yml stays valid and consistent with the code (roles, settings, topics)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from oddstream.cli import app
from oddstream.settings import Settings

pytestmark = pytest.mark.pure
ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ROLES = {"store", "worker", "gateway", "api", "dispatcher", "simulator"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def test_docker_compose_config_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is needed for this check: `make deps` installs Debian's docker-compose"
    env = {
        **os.environ,
        "CLICKHOUSE_PASSWORD": "x",
        "ODDSTREAM_WEBHOOK_MASTER_SECRET": "y",
        "ODDSTREAM_SQL_TOKEN": "z",
        "ODDSTREAM_WORKER_STATE_KEY": "w",
        "ODDSTREAM_API_TOKENS": '["t"]',
        "ODDSTREAM_GATEWAY_API_KEYS": '["k"]',
    }
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr


def test_three_kraft_brokers_a_registry_clickhouse_and_every_role() -> None:
    services = compose()["services"]
    assert {"kafka-1", "kafka-2", "kafka-3", "schema-registry", "clickhouse"} | ROLES <= set(services)
    voters = services["kafka-1"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters == ",".join(f"{n}@kafka-{n}:9093" for n in (1, 2, 3))
    assert {services[f"kafka-{n}"]["environment"]["KAFKA_NODE_ID"] for n in (1, 2, 3)} == {
        "1",
        "2",
        "3",
    }


def test_roles_run_real_cli_commands_with_real_settings() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    fields = {f"ODDSTREAM_{name.upper()}" for name in Settings.model_fields}
    brokers = [s for s in compose()["services"] if s.startswith("kafka-")]
    for role in ROLES:
        service = compose()["services"][role]
        assert service["command"][0] in commands, f"{role}: {service['command']} is not an oddstream command"
        env = service["environment"]
        unknown = {k for k in env if k.startswith("ODDSTREAM_")} - fields
        assert not unknown, f"{role} sets variables no setting reads: {unknown}"
        hosts = env["ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS"].split(",")
        assert sorted(h.split(":")[0] for h in hosts) == sorted(brokers)
        assert int(env["ODDSTREAM_TOPIC_REPLICATION"]) <= len(brokers)
        assert env["ODDSTREAM_SCHEMA_REGISTRY_URL"].startswith("http://schema-registry:")
        assert (
            env["ODDSTREAM_CLICKHOUSE_DSN"].startswith("http://")
            and "@clickhouse:8123/" in env["ODDSTREAM_CLICKHOUSE_DSN"]
        )


def test_published_ports_match_the_settings() -> None:
    services = compose()["services"]
    defaults = Settings()
    assert services["gateway"]["ports"] == [f"{defaults.gateway_port}:{defaults.gateway_port}"]
    assert services["gateway"]["environment"]["ODDSTREAM_GATEWAY_PORT"] == str(defaults.gateway_port)
    assert services["store"]["environment"]["ODDSTREAM_STORE_PORT"] == str(defaults.store_port)
    # the SQL endpoint is not published open: loopback only, and it asks for a token
    assert services["store"]["ports"] == [f"127.0.0.1:{defaults.store_port}:{defaults.store_port}"]
    assert services["store"]["environment"]["ODDSTREAM_SQL_TOKEN"].startswith("${ODDSTREAM_SQL_TOKEN:?")
    # the gateway is published on every interface: it asks for a key
    assert services["gateway"]["environment"]["ODDSTREAM_GATEWAY_API_KEYS"].startswith(
        "${ODDSTREAM_GATEWAY_API_KEYS:?"
    )
    assert services["worker"]["environment"]["ODDSTREAM_TOPIC_PREFIX"] == defaults.topic_prefix
    # the HTTP API is published too: it asks for a token
    assert services["api"]["ports"] == [f"{defaults.api_port}:{defaults.api_port}"]
    assert services["api"]["environment"]["ODDSTREAM_API_PORT"] == str(defaults.api_port)
    assert services["api"]["environment"]["ODDSTREAM_API_TOKENS"].startswith("${ODDSTREAM_API_TOKENS:?")


def test_the_registry_service_and_the_local_registry_agree() -> None:
    """Same Apicurio release, same Confluent API path, same compatibility and id settings."""
    from infra.registry import APICURIO_VERSION, CCOMPAT_PATH, REGISTRY_SETTINGS
    from oddstream.kafka.registry import COMPATIBILITY

    service = compose()["services"]["schema-registry"]
    image, _, tag = service["image"].rpartition(":")
    assert image.startswith("apicurio/apicurio-registry-") and tag == APICURIO_VERSION
    env = service["environment"]
    assert {k: env[k] for k in REGISTRY_SETTINGS} == REGISTRY_SETTINGS
    assert env["REGISTRY_RULES_GLOBAL_COMPATIBILITY"] == COMPATIBILITY  # what oddstream sets per subject
    port = env["QUARKUS_HTTP_PORT"]
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert Settings().local_registry_port == int(port)
    for role in ROLES:
        url = compose()["services"][role]["environment"]["ODDSTREAM_SCHEMA_REGISTRY_URL"]
        assert url == f"http://schema-registry:{port}{CCOMPAT_PATH}"


def test_the_compose_brokers_and_the_local_cluster_replicate_alike() -> None:
    """`oddstream broker start --nodes 3` sets what the compose brokers set (infra/broker.py)."""
    from infra.broker import REPLICATED

    env = compose()["services"]["kafka-1"]["environment"]
    for key, value in REPLICATED.items():
        assert env["KAFKA_" + key.upper().replace(".", "_")] == value, key
    role_env = compose()["services"]["worker"]["environment"]
    assert role_env["ODDSTREAM_TOPIC_REPLICATION"] == REPLICATED["default.replication.factor"]

"""One settings object per process, read from ``ODDSTREAM_*`` environment variables.

Built once at the entry point (the CLI) and passed down; nothing reads the
environment at import time. ``KAFKA_BOOTSTRAP_SERVERS`` is accepted as well
as ``ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS`` because every Kafka tool knows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from oddstream.errors import ConfigError
from schemas.intake import Limits
from streams.specs import DEFAULT_SPECS, WindowSpec, parse_specs, specs_json

if TYPE_CHECKING:  # the analytics (River, numpy, scipy) load only where windows run
    from streams.processor import WindowConfig

DEFAULT_DATA_DIR = Path(".oddstream")
DEVELOPMENT_MASTER_SECRET = "oddstream-local-development-secret"
DEVELOPMENT_STATE_KEY = "oddstream-local-development-state-key"


class Settings(BaseSettings):
    """Everything a role needs to know about where things are.

    Example::

        settings = Settings(kafka_bootstrap_servers="127.0.0.1:9092")
    """

    model_config = SettingsConfigDict(env_prefix="ODDSTREAM_", frozen=True, extra="forbid")

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Local state: broker data, embedded ClickHouse, logs, simulator ground truth.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS",
            "KAFKA_BOOTSTRAP_SERVERS",
            "kafka_bootstrap_servers",
        ),
        description="An existing Kafka cluster. Unset: `oddstream up` starts a local broker.",
    )
    local_kafka_port: int = Field(
        default=9092, description="Client port of the local broker started when no cluster is set."
    )
    local_kafka_nodes: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Nodes of the local cluster `oddstream broker start` and `up` run (3: replication "
        "factor 3, two in sync, one node may be lost); node i listens on local_kafka_port + 2i.",
    )
    topic_prefix: str = Field(default="oddstream.", description="Prefix of every topic name.")
    topic_partitions: int = Field(default=6, ge=1, description="Partitions of topics oddstream creates.")
    topic_replication: int = Field(default=1, ge=1, description="Replication factor of new topics.")
    schema_registry_url: str | None = Field(
        default=None,
        description="A Schema Registry's Confluent API (Confluent's, or Apicurio's .../apis/ccompat/v7): "
        "producers register and write Confluent frames. Unset: Avro single-object encoding.",
    )
    local_registry_port: int = Field(
        default=8081,
        description="Port of the local Apicurio registry `oddstream registry start` and "
        "`oddstream up --schema-registry` run when no registry URL is set.",
    )
    clickhouse_dsn: str | None = Field(
        default=None,
        description="chdb:///path (embedded, default under data_dir) or http(s)://user:pw@host:8123/db.",
    )
    store_host: str = Field(default="127.0.0.1", description="Bind address of the store's SQL endpoint.")
    store_port: int = Field(default=8124, description="Port of the store's read-only SQL endpoint.")
    store_url: str | None = Field(
        default=None,
        description="Where `oddstream sql` finds the store. Default: from host and port.",
    )
    store_batch_wait_ms: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description="The store gathers records this long after the first of a batch before inserting "
        "(every insert makes a ClickHouse part, a few milliseconds each whatever its size): rows reach "
        "ClickHouse at most this much later, in far fewer inserts. 0: insert whatever one fetch returns.",
    )
    store_batch_max_records: int = Field(
        default=20_000, gt=0, description="A store batch is inserted early once it holds this many records."
    )
    gateway_host: str = Field(default="127.0.0.1", description="Bind address of the WebSocket gateway.")
    gateway_port: int = Field(default=8765, description="Port of the WebSocket gateway.")
    api_host: str = Field(default="127.0.0.1", description="Bind address of the HTTP API (`oddstream api`).")
    api_port: int = Field(default=8127, description="Port of the HTTP API.")
    api_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens the HTTP API accepts (a JSON list). Required when api_host is not "
        "loopback.",
    )
    api_url: str | None = Field(
        default=None,
        description="Where `oddstream webhook ...` finds the HTTP API (default http://<api_host>:<api_port>; "
        "it sends the first of api_tokens).",
    )
    api_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest HTTP API request body; larger ones get 413."
    )
    api_max_batch: int = Field(default=1000, ge=1, description="Most events in one POST /v1/events batch.")
    gateway_api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys the gateway accepts: KEY (every channel) or KEY=pattern,pattern "
        "(those channels, e.g. k1=markets,market:*). Empty, and no JWT key: no authentication (local only).",
    )
    gateway_jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 key of the JWTs the gateway accepts (claims: sub, exp, channels)."
    )
    gateway_jwt_public_key: str | None = Field(
        default=None,
        description="RS256 public key (PEM text, or the path of a PEM file) of the JWTs the gateway accepts.",
    )
    gateway_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins a browser may connect from (e.g. https://screens.example.com). Empty: any. "
        "Requests without an Origin header (not browsers) are not affected.",
    )
    gateway_max_connections_per_key: int = Field(
        default=100, ge=1, description="Open WebSocket connections per API key or JWT subject."
    )
    gateway_client_max_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        description="Bytes written to one WebSocket client's socket and not yet sent (or held while its "
        "snapshot or replay is sent) before it is cut (close 1013).",
    )
    gateway_commands_per_s: float = Field(
        default=20.0,
        gt=0,
        description="Commands one WebSocket client may send a second (twice that in a burst).",
    )
    gateway_max_subscriptions: int = Field(
        default=200, ge=1, description="Channels one WebSocket connection may subscribe to."
    )
    gateway_resume_max_records: int = Field(
        default=100_000,
        ge=0,
        description="A subscribe with a position replays at most this many records from Kafka; "
        "further behind, it is answered recovered: false (code too_far).",
    )
    gateway_snapshot_warm_records: int = Field(
        default=2_000,
        ge=0,
        description="At start the gateway reads back this many records of each partition it serves, "
        "so the state a new subscriber gets (its snapshot) is full at once.",
    )
    gateway_client_queue: int = Field(
        default=1000,
        ge=1,
        description="Live frames held for a WebSocket client while its snapshot or replay is sent; "
        "past it the client is cut (close 1013).",
    )
    webhook_master_secret: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_MASTER_SECRET),
        description="Endpoint signing secrets are derived from this; the dispatcher refuses the "
        "development default unless ODDSTREAM_DEVELOPMENT is true.",
    )
    development: bool = Field(
        default=False,
        description="Local development (`oddstream up` sets it): allows the development webhook secret "
        "and worker state key.",
    )
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="Allow webhook URLs on loopback or private networks (local development only).",
    )
    webhook_receiver_port: int = Field(
        default=8899, description="Port of the demo webhook receiver `oddstream up` runs on 127.0.0.1."
    )
    webhook_retry_schedule_s: tuple[float, ...] = Field(
        default=(5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0),  # SVIX_SCHEDULE_S
        description="Delays before the 2nd, 3rd, ... attempt of a webhook message, in seconds (JSON list; "
        "Svix's by default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); after the last the message is "
        "given up to the webhook dead-letter topic.",
    )
    webhook_disable_after_s: float = Field(
        default=5 * 24 * 3600.0,
        gt=0,
        description="An endpoint whose attempts have all failed for this long is disabled (5 days, as Svix).",
    )
    webhook_breaker_failures: int = Field(
        default=5, ge=1, description="Failed attempts in a row that open an endpoint's circuit."
    )
    webhook_breaker_open_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit sends nothing before one probe."
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of one webhook POST.")
    webhook_endpoint_concurrency: int = Field(
        default=4, ge=1, le=64, description="Deliveries in flight per endpoint (its lane's workers)."
    )
    simulator_seed: int = Field(default=7, description="Seed of the market simulator.")
    simulator_rate: float = Field(default=200.0, gt=0, description="Simulated events per second.")
    simulator_markets: int = Field(default=12, ge=1, description="Markets open at once.")
    simulator_anomaly_rate: float = Field(
        default=0.0005, ge=0, le=1, description="Chance per step of an injected, labelled anomaly (0: none)."
    )
    simulator_mispricing_rate: float = Field(
        default=0.002,
        ge=0,
        le=1,
        description="Chance per step of an injected, labelled mispricing (0: none).",
    )
    worker_id: str = Field(default="oddstream-worker", description="Faust app id (the consumer group).")
    window_size_ms: int = Field(default=60_000, gt=0, description="Length of the analytics windows.")
    window_specs: str = Field(
        default=specs_json(DEFAULT_SPECS),
        description="Windows besides the one-minute tumbling ones, as JSON: a list of {name, kinds, shape "
        "(tumbling, hopping, sliding), size_ms, advance_ms (hopping)}; each spec's results go to "
        "<table>_<name> and market:<id>@<name> (docs/tables.md). '[]': none.",
    )
    window_delay_ms: int = Field(
        default=5_000, ge=0, description="Watermark = newest event time of the partition minus this."
    )
    window_grace_ms: int = Field(
        default=10_000,
        ge=0,
        description="A window closes (final result) once the watermark passes end + this.",
    )
    window_idle_timeout_ms: int = Field(
        default=30_000,
        gt=0,
        description="After this much silence a partition's watermark follows the clock (quiet markets close)",
    )
    state_resulted_market_ms: int = Field(
        default=3_600_000,
        gt=0,
        description="A market's state is kept this long (event time) after its result, for late events; "
        "a quote after that is dead-lettered as an unknown market.",
    )
    state_idle_market_ms: int = Field(
        default=7 * 86_400_000,
        gt=0,
        description="A market with no event for this long (event time) is forgotten, with its open "
        "forecasts (a market never resulted).",
    )
    state_idle_user_ms: int = Field(
        default=30 * 86_400_000,
        gt=0,
        description="A user with no bet for this long loses their stake baseline (user_stake_change).",
    )
    state_idle_service_ms: int = Field(
        default=86_400_000,
        gt=0,
        description="A service or route silent this long is forgotten: its statistics, and its "
        "heartbeat_gap alert resolves.",
    )
    worker_update_interval_ms: int = Field(
        default=250,
        ge=0,
        description="Current window updates are coalesced: at most one per window per this interval.",
    )
    worker_checkpoint_interval_s: float = Field(
        default=1.0, gt=0, description="How often the worker snapshots each partition's window state."
    )
    input_max_skew_ms: int = Field(
        default=5_000,
        ge=0,
        description="An event time further ahead of its record's Kafka timestamp is dead-lettered "
        "(it would drag the partition's watermark). Keep it below window delay + grace.",
    )
    input_max_source_bytes: int = Field(default=64 * 1024, gt=0, description="Largest source record.")
    input_max_string_chars: int = Field(default=1_024, gt=0, description="Longest string in a source event.")
    input_max_array_items: int = Field(default=1_024, gt=0, description="Most items of an array or map.")
    source_retention_ms: int = Field(
        default=-1,
        ge=-1,
        description="retention.ms of the source topics oddstream creates; -1 keeps the log forever, "
        "so every derived result can be rebuilt by a replay.",
    )
    sql_max_execution_s: float = Field(
        default=30.0, gt=0, description="An analyst's query is cut after this."
    )
    sql_max_memory_bytes: int = Field(
        default=1 << 30, gt=0, description="Memory one analyst's query may use."
    )
    sql_max_rows_to_read: int = Field(default=500_000_000, gt=0, description="Rows one query may read.")
    sql_max_result_rows: int = Field(default=1_000_000, gt=0, description="Rows one query may return.")
    sql_max_result_bytes: int = Field(default=256 << 20, gt=0, description="Bytes one query may return.")
    sql_max_threads: int = Field(
        default=1, ge=1, description="Threads one query may use (embedded: the rest stay with ingestion)."
    )
    sql_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the SQL endpoint asks for. Required when store_host is not loopback.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="Bind address of the worker's /metrics."
    )
    worker_metrics_port: int = Field(
        default=8126, ge=0, description="Port of the worker's Prometheus /metrics (0: none)."
    )
    worker_stall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="A source topic with records waiting and no progress on any of its partitions for this "
        "long makes the worker dump its tasks and exit (code 3) for a restart.",
    )
    worker_stop_deadline_s: float = Field(
        default=4.0,
        gt=0,
        description="A worker still stopping this long after SIGTERM or SIGINT exits at once; the "
        "next start reads again from the last commit and snapshot, as after a crash.",
    )
    worker_state_key: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_STATE_KEY),
        description="Authenticates the worker's snapshots and what it writes to bets.by-user (HMAC-SHA256): "
        "a snapshot in the changelog not written with it is refused and the partition rebuilt from the "
        "source log; a bets.by-user record not signed with it is dead-lettered. Worker, store and replay "
        "need the same key. Changing it rebuilds every partition (and dead-letters the bets.by-user "
        "records signed with the old key as they are read again). The worker refuses the development "
        "default unless ODDSTREAM_DEVELOPMENT is true.",
    )
    worker_snapshot_chunk_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=8 * 1024 * 1024,
        description="A partition snapshot larger than this (compressed) is written as chunks of this "
        "size, so no changelog record nears the 16 MiB message cap.",
    )
    log_level: str = Field(default="info", description="debug, info, warn or error.")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError("topic_prefix may hold only letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _sql_endpoint_beyond_loopback_needs_a_token(self) -> Settings:
        if self.sql_token is None and not is_loopback(self.store_host):
            raise ValueError(
                f"store_host {self.store_host!r} listens beyond loopback: set ODDSTREAM_SQL_TOKEN, "
                "the bearer token the SQL endpoint will ask for"
            )
        return self

    @model_validator(mode="after")
    def _replication_fits_the_local_cluster(self) -> Settings:
        if not self.kafka_bootstrap_servers and self.topic_replication > self.local_kafka_nodes:
            raise ValueError(
                f"topic_replication {self.topic_replication} needs as many brokers; the local cluster has "
                f"{self.local_kafka_nodes} (set ODDSTREAM_LOCAL_KAFKA_NODES)"
            )
        return self

    @field_validator("window_specs")
    @classmethod
    def _specs_parse(cls, value: str) -> str:
        parse_specs(value)  # a ValueError names every problem
        return value

    def specs(self) -> tuple[WindowSpec, ...]:
        """The extra window specs (streams/specs.py)."""
        return parse_specs(self.window_specs)

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _schedule_is_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) > 30 or any(not 0 < d <= 7 * 24 * 3600 for d in value):
            raise ValueError("webhook_retry_schedule_s: at most 30 delays, each from 0 (excluded) to 7 days")
        return value

    @model_validator(mode="after")
    def _api_beyond_loopback_needs_tokens(self) -> Settings:
        if not self.api_tokens and not is_loopback(self.api_host):
            raise ValueError(
                f"api_host {self.api_host!r} listens beyond loopback: set ODDSTREAM_API_TOKENS, "
                'the bearer tokens the HTTP API will ask for (a JSON list: ["<token>"])'
            )
        return self

    @model_validator(mode="after")
    def _gateway_beyond_loopback_needs_credentials(self) -> Settings:
        secret = self.gateway_jwt_secret.get_secret_value() if self.gateway_jwt_secret else ""
        if secret and len(secret) < 32:
            raise ValueError("ODDSTREAM_GATEWAY_JWT_SECRET must be at least 32 characters (an HS256 key)")
        if (
            not is_loopback(self.gateway_host)
            and not self.gateway_api_keys
            and not secret
            and not self.gateway_jwt_public_key
        ):
            raise ValueError(
                f"gateway_host {self.gateway_host!r} listens beyond loopback: set ODDSTREAM_GATEWAY_API_KEYS "
                "or a JWT key (ODDSTREAM_GATEWAY_JWT_SECRET / ODDSTREAM_GATEWAY_JWT_PUBLIC_KEY); "
                "an open gateway is for this machine only"
            )
        return self

    @property
    def bootstrap(self) -> str:
        """The Kafka bootstrap servers to use: the configured cluster or the local broker."""
        return self.kafka_bootstrap_servers or ",".join(
            f"127.0.0.1:{port}" for port in self.local_kafka_ports
        )

    @property
    def local_kafka_ports(self) -> list[int]:
        """Client ports of the local nodes (each node's controller listens on the next port)."""
        return [self.local_kafka_port + 2 * i for i in range(self.local_kafka_nodes)]

    @property
    def clickhouse(self) -> str:
        """The ClickHouse DSN, defaulting to embedded chDB under ``data_dir``."""
        if self.clickhouse_dsn:
            return self.clickhouse_dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def clickhouse_is_embedded(self) -> bool:
        return self.clickhouse.startswith("chdb:")

    @property
    def api_base(self) -> str:
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
        return self.api_url or f"http://{host}:{self.api_port}"

    @property
    def sql_endpoint(self) -> str:
        return self.store_url or f"http://{self.store_host}:{self.store_port}"

    def window_config(self) -> WindowConfig:
        from streams.processor import Retention, WindowConfig

        retention = Retention(
            resulted_market_ms=self.state_resulted_market_ms,
            idle_market_ms=self.state_idle_market_ms,
            idle_user_ms=self.state_idle_user_ms,
            idle_service_ms=self.state_idle_service_ms,
        )
        return WindowConfig(
            self.window_size_ms,
            self.window_delay_ms,
            self.window_grace_ms,
            self.window_idle_timeout_ms,
            retention,
            self.specs(),
            source_partitions=self.topic_partitions,  # the worker and replay ask the bets topic
        )

    def limits(self) -> Limits:
        """The bounds every consumer checks input records against (schemas/intake.py)."""
        return Limits(
            max_source_bytes=self.input_max_source_bytes,
            max_string_chars=self.input_max_string_chars,
            max_array_items=self.input_max_array_items,
            max_skew_ms=self.input_max_skew_ms,
        )

    def api_keys(self) -> list[str]:
        """The gateway's API key entries (``KEY`` or ``KEY=patterns``)."""
        return [key.get_secret_value() for key in self.gateway_api_keys]

    def jwt_public_key(self) -> str | None:
        key = self.gateway_jwt_public_key
        if key is None or key.lstrip().startswith("-----BEGIN"):
            return key
        return Path(key).read_text()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def load_settings(**overrides: object) -> Settings:
    """Build the process's settings from the environment plus explicit overrides."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc

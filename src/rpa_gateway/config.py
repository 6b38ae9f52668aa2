"""Settings from the environment and an optional ``config.env`` file.

Names deployments of the reference service already set keep their meaning and
defaults (``SERVICE_PORT``, ``XIAOWU_RPA_*``, ``LOG_*``); settings new to this
service start with ``RPA_``.  Every setting's environment name is its field
name in upper case.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from rpa_gateway.access import ApiKeys, parse_entries, read_entries

PositiveSeconds = Annotated[float, Field(gt=0)]


def _check_http_url(value: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file="config.env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    _api_keys: ApiKeys | None = PrivateAttr(default=None)
    _admin_keys: ApiKeys | None = PrivateAttr(default=None)

    # --- names kept from the reference service -------------------------------
    # Unset: all interfaces, except the local backend without RPA_API_KEYS (loopback only).
    service_host: str | None = None
    service_port: Annotated[int, Field(ge=0, le=65535)] = 19999
    log_level: str = "INFO"
    log_path: str = ""
    xiaowu_rpa_timeout: PositiveSeconds = 300.0
    xiaowu_rpa_ping_interval: PositiveSeconds = 3.0
    xiaowu_rpa_task_query_interval: PositiveSeconds = 10.0
    xiaowu_rpa_task_create_url: str = ""
    xiaowu_rpa_task_query_url: str = ""
    xiaowu_rpa_task_cancel_url: str = ""

    otlp_enable: bool = False
    otlp_endpoint: str = ""  # host:port or URL of an OTLP/HTTP receiver; unset: OTEL_* vars
    otlp_service_name: str = "rpa-gateway"
    otlp_dc: str = ""
    otlp_metric_export_interval_millis: Annotated[int, Field(ge=100)] = 3000
    otlp_trace_timeout: Annotated[int, Field(ge=1)] = 3000  # ms per export request
    otlp_trace_max_queue_size: Annotated[int, Field(ge=1)] = 2048
    otlp_trace_schedule_delay_millis: Annotated[int, Field(ge=1)] = 3000
    otlp_trace_max_export_batch_size: Annotated[int, Field(ge=1)] = 512
    otlp_trace_export_timeout_millis: Annotated[int, Field(ge=1)] = 30000
    kafka_servers: str = ""  # bootstrap servers; unset: no trace records
    # astron-agent's compose sets KAFKA_SERVERS always and switches with KAFKA_ENABLE=0/1;
    # unset, the trace log is on whenever KAFKA_SERVERS is set.
    kafka_enable: bool | None = None
    kafka_topic: str = "rpa-trace"
    kafka_timeout: PositiveSeconds = 10.0  # a record not delivered by then is dropped

    # --- settings new to this service -----------------------------------------
    rpa_prometheus_enable: bool = False  # serve GET /metrics
    # Allocations between young-generation collections (Python's default: 700); 0 keeps it.
    rpa_gc_threshold: Annotated[int, Field(ge=0)] = 50_000
    rpa_kafka_queue_size: Annotated[int, Field(ge=1)] = 10000
    # local | astron; unset: astron when XIAOWU_RPA_TASK_CREATE_URL is set, else local.
    rpa_backend: Literal["local", "astron"] | None = None
    rpa_projects_dir: Path = Path("projects")
    rpa_local_max_runs: Annotated[int, Field(ge=1)] = 8
    # Runs one caller may have at once; unset: all but a quarter of RPA_LOCAL_MAX_RUNS (>= 1 kept).
    rpa_local_max_runs_per_token: Annotated[int, Field(ge=1)] | None = None
    rpa_local_max_queued_per_token: Annotated[int, Field(ge=0)] = 1000
    rpa_max_unfinished_per_token: Annotated[int, Field(ge=1)] = 1000
    # MB one caller's executions may hold in the store (requests, results, logs) before its
    # creates are refused (429) until retention frees room; unset: no bound.
    rpa_max_stored_mb_per_token: Annotated[float, Field(gt=0)] | None = 1024.0
    rpa_local_kill_grace: Annotated[float, Field(gt=0, le=8)] = 3.0
    rpa_data_dir: Path = Path("data")
    # Largest the execution store (the database and its WAL) may grow (MB); at the bound
    # creates are refused (503) until retention frees room, as on a full disk.  At least 1:
    # the empty store takes about 0.2 MB.  Unset: bounded by the disk only.
    rpa_store_max_mb: Annotated[float, Field(ge=1)] | None = None
    rpa_poll_first_delay: PositiveSeconds = 1.0
    rpa_poll_backoff: Annotated[float, Field(ge=1.0)] = 2.0
    # Seconds from a run's end to its result aimed for by the schedules learned from each
    # project's recent runs (within no more polls than XIAOWU_RPA_TASK_QUERY_INTERVAL makes).
    rpa_poll_target_latency: PositiveSeconds = 2.0
    # false: every project is polled on the backoff schedule above, none on a learned one
    # (run durations are still recorded, to learn from once it is true again).
    rpa_poll_learn: bool = True
    # Requests a second to the RPA platform at most, from all executions together (0: no
    # limit); more wait their turn, first come first served.
    rpa_upstream_max_rps: Annotated[float, Field(ge=0)] = 500.0
    rpa_query_max_failures: Annotated[int, Field(ge=1)] = 5
    rpa_retry_base_delay: PositiveSeconds = 0.5
    rpa_create_connect_retries: Annotated[int, Field(ge=0)] = 2
    rpa_upstream_connect_timeout: PositiveSeconds = 5.0
    rpa_upstream_read_timeout: PositiveSeconds = 30.0
    rpa_upstream_max_connections: Annotated[int, Field(ge=1)] = 256
    # The platform's managed execution contract (idempotent creates, platform deadlines,
    # truthful cancels): auto speaks it to a platform whose discovery route offers it,
    # managed and legacy skip the question (legacy: never a managed field on the wire).
    rpa_upstream_contract: Literal["auto", "managed", "legacy"] = "auto"
    # The RPA OpenAPI's root (…/api/rpa-openapi); unset: the create URL less
    # /workflows/execute-async.  Discovery and the managed cancel route hang from it.
    rpa_upstream_base_url: str = ""
    # Seconds a caller's discovery answer is kept while its RPA client is ready (5 s while
    # it is not; 10 minutes for a platform without the contract).
    rpa_contract_probe_ttl: PositiveSeconds = 30.0
    # Seconds a cancel waits for the platform to confirm the robot stopped before the
    # execution ends 55004 saying the stop is unconfirmed.
    rpa_cancel_confirm_seconds: PositiveSeconds = 15.0
    rpa_max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    rpa_body_timeout: PositiveSeconds = 30.0  # a request body must arrive within it
    rpa_max_header_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    # Seconds a connection may take to send a complete request head (also when idle).
    rpa_header_timeout: PositiveSeconds = 10.0
    # Open connections at most; unset: the file-descriptor limit less what the store, logs,
    # the upstream pool and local runs need.
    rpa_max_connections: Annotated[int, Field(ge=1)] | None = None
    rpa_shutdown_grace: Annotated[int, Field(ge=0)] = 5
    # Seconds open streams get to finish after SIGTERM; unset: XIAOWU_RPA_TIMEOUT + 15, so a
    # run started just before the signal ends (at worst by its timeout) before the process.
    rpa_drain_seconds: Annotated[float, Field(ge=0)] | None = None
    # Longest ``data:`` line of the compat stream, prefix and line end included: aiohttp
    # (astron-agent's node) refuses lines over 128 KiB.
    rpa_max_frame_bytes: Annotated[int, Field(ge=4096)] = 131_000
    rpa_access_log: bool = False
    rpa_log_json: bool = False
    rpa_upstream_keepalive: PositiveSeconds = 4.0
    # 32 bytes, URL-safe base64 (``rpa-gateway keygen``): encrypts callers' tokens at rest so
    # executions resume after a restart on their own.  Unset: tokens live in memory only.
    rpa_token_key: SecretStr | None = None
    # Callers admitted (comma-separated ``sha256:<hex>`` digests or keys), and/or a file of
    # them, one a line; unset, any non-empty token is a caller.
    rpa_api_keys: SecretStr | None = None
    rpa_api_keys_file: Path | None = None
    # Operators' keys, given like RPA_API_KEYS: they see (and may cancel) every caller's
    # executions; they are callers too.
    rpa_admin_keys: SecretStr | None = None
    rpa_retention_seconds: Annotated[float, Field(ge=0)] = 7 * 24 * 3600.0
    # Several replicas share executions in Redis (astron-agent's names): one server
    # ``host:port``, or a cluster's comma-separated seeds; unset, the embedded SQLite store.
    redis_addr: str | None = None
    redis_cluster_addr: str | None = None
    redis_password: SecretStr | None = None
    # A replica that stops renewing its leases (killed) loses its executions to the others
    # after this many seconds.
    rpa_lease_seconds: Annotated[float, Field(ge=1)] = 10.0
    rpa_retention_sweep_seconds: PositiveSeconds = 60.0
    rpa_reconnect_delay_ms: Annotated[int, Field(ge=0)] = 1000
    # A stream whose client takes no byte for this long (its socket full) is cut: it holds
    # memory and a descriptor for nobody.  It resumes with Last-Event-ID.
    rpa_stream_stall_seconds: PositiveSeconds = 60.0
    # --- webhooks (/rpa/v1/webhooks) -------------------------------------------------
    rpa_webhooks_per_token: Annotated[int, Field(ge=1)] = 20
    # Seconds the old secret keeps signing beside the new one after a rotation.
    rpa_webhook_rotation_seconds: Annotated[float, Field(ge=0)] = 86400.0
    # A result larger than this (bytes of JSON) is left out of the body, with its URL.
    rpa_webhook_max_result_bytes: Annotated[int, Field(ge=0)] = 256 * 1024
    rpa_webhook_timeout: PositiveSeconds = 10.0  # seconds one attempt may take
    # Seconds before each retry (comma-separated); a delivery fails after the last.
    rpa_webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    # Seconds an endpoint may fail every attempt before it is disabled.
    rpa_webhook_disable_after: PositiveSeconds = 5 * 86400.0
    # Hosts webhooks may reach over plain http (comma-separated); others need https.
    rpa_webhook_allow_hosts: str = ""
    # Private, loopback and link-local addresses (a compose network); metadata too.
    rpa_webhook_allow_private: bool = False
    # --- MCP (/mcp) -------------------------------------------------------------------
    # Seconds a tool call waits for its run before it answers with the execution id (under
    # the 30-60 s that common MCP clients give a call); a call's wait_seconds may ask for
    # less, or more up to RPA_MCP_MAX_WAIT_SECONDS.
    rpa_mcp_wait_seconds: PositiveSeconds = 25.0
    rpa_mcp_max_wait_seconds: PositiveSeconds = 300.0
    # Accept the caller's key as ?key= in the MCP URL, for clients that cannot send headers
    # (astron-agent's); such URLs end up in proxies' logs, so it is off unless asked for.
    rpa_mcp_allow_query_key: bool = False
    # Browser origins allowed to call /mcp (comma-separated, e.g. https://app.example.com);
    # requests without Origin (non-browser clients) always pass.
    rpa_mcp_allowed_origins: str = ""
    # Host header values /mcp answers (comma-separated; host, host:port or host:*; * for
    # any).  Unset: the loopback names when listening on loopback, any name otherwise.
    rpa_mcp_allowed_hosts: str | None = None

    @field_validator(
        "xiaowu_rpa_task_create_url",
        "xiaowu_rpa_task_query_url",
        "xiaowu_rpa_task_cancel_url",
        "rpa_upstream_base_url",
    )
    @classmethod
    def _urls_are_http(cls, value: str) -> str:
        return _check_http_url(value.strip())

    @field_validator("rpa_webhook_retry_schedule")
    @classmethod
    def _retry_schedule_is_seconds(cls, value: str) -> str:
        try:
            delays = [float(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError("must be seconds separated by commas, e.g. 5,300,1800") from None
        if not all(0 < delay < float("inf") for delay in delays):
            raise ValueError("each delay must be a number of seconds above 0")
        return value

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        return tuple(float(p) for p in self.rpa_webhook_retry_schedule.split(",") if p.strip())

    @property
    def webhook_allow_hosts(self) -> frozenset[str]:
        return frozenset(
            h.strip().lower() for h in self.rpa_webhook_allow_hosts.split(",") if h.strip()
        )

    @field_validator("xiaowu_rpa_task_cancel_url")
    @classmethod
    def _cancel_url_names_the_execution(cls, value: str) -> str:
        if value and "{execution_id}" not in value:
            raise ValueError("must contain {execution_id}")
        return value

    @field_validator(
        "kafka_enable",
        "rpa_drain_seconds",
        "rpa_api_keys",
        "rpa_api_keys_file",
        "rpa_admin_keys",
        "rpa_store_max_mb",
        "rpa_local_max_runs_per_token",
        "rpa_max_connections",
        "redis_addr",
        "redis_cluster_addr",
        "redis_password",
        "rpa_mcp_allowed_hosts",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rpa_token_key")
    @classmethod
    def _token_key_is_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        decode_key(value.get_secret_value())
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError("must be one of CRITICAL, ERROR, WARNING, INFO, DEBUG")
        return level

    @property
    def api_keys(self) -> ApiKeys | None:
        """The admitted keys, or ``None`` when every token is admitted."""
        return self._api_keys

    @property
    def admin_keys(self) -> ApiKeys | None:
        """Operators' keys (``RPA_ADMIN_KEYS``), or ``None``."""
        return self._admin_keys

    @property
    def redis_seeds(self) -> list[str]:
        """``host:port`` of the Redis server, or of the cluster's seeds; empty: SQLite."""
        addresses = self.redis_cluster_addr or self.redis_addr or ""
        return [a.strip() for a in addresses.split(",") if a.strip()]

    @model_validator(mode="after")
    def _redis_is_usable(self) -> Settings:
        if self.redis_addr and self.redis_cluster_addr:
            raise ValueError("set REDIS_ADDR (one server) or REDIS_CLUSTER_ADDR, not both")
        for address in self.redis_seeds:
            host, _, port = address.rpartition(":")
            if not host or not port.isascii() or not port.isdigit():
                raise ValueError(f"Redis address {address!r} is not host:port")
        if self.redis_seeds and self.rpa_token_key is None:
            raise ValueError(
                "the Redis store (REDIS_ADDR / REDIS_CLUSTER_ADDR) needs RPA_TOKEN_KEY, the same"
                " on every replica: any replica may have to poll for any caller, so tokens are"
                " sealed in Redis (make one with `rpa-gateway keygen`)"
            )
        return self

    @property
    def listen_host(self) -> str:
        if self.service_host:
            return self.service_host
        if self.backend == "local" and self.api_keys is None:
            return "127.0.0.1"  # anyone reaching the port could run local projects
        return "0.0.0.0"  # noqa: S104 - a service listens on all interfaces

    @model_validator(mode="after")
    def _api_keys_are_readable(self) -> Settings:
        digests: list[bytes] = []
        if self.rpa_api_keys is not None:
            entries = self.rpa_api_keys.get_secret_value().split(",")
            digests += parse_entries(entries, "RPA_API_KEYS")
        if self.rpa_api_keys_file is not None:
            try:
                digests += read_entries(self.rpa_api_keys_file)
            except ValueError as exc:
                raise ValueError(f"RPA_API_KEYS_FILE: {exc}") from None
        if self.rpa_admin_keys is not None:
            admins = parse_entries(
                self.rpa_admin_keys.get_secret_value().split(","), "RPA_ADMIN_KEYS"
            )
            if not admins:
                raise ValueError("RPA_ADMIN_KEYS: no key given; unset it for no operator")
            self._admin_keys = ApiKeys(admins)
        if self.rpa_api_keys is None and self.rpa_api_keys_file is None:
            return self
        if not digests:
            raise ValueError("RPA_API_KEYS: no key given; unset it to admit every token")
        self._api_keys = ApiKeys(digests)
        return self

    # Cached: the MCP gate asks on every request.
    @cached_property
    def mcp_allowed_origins(self) -> frozenset[str]:
        return frozenset(_listed(self.rpa_mcp_allowed_origins))

    @cached_property
    def mcp_allowed_hosts(self) -> tuple[str, ...] | None:
        """Host header patterns /mcp answers; ``None``: any."""
        if self.rpa_mcp_allowed_hosts is not None:
            hosts = tuple(_listed(self.rpa_mcp_allowed_hosts.lower()))
            return None if "*" in hosts else hosts
        if _is_loopback(self.listen_host):
            names = ("127.0.0.1:*", "localhost:*", "[::1]:*")
            host = self.listen_host
            return names if ":" in host or f"{host}:*" in names else (*names, f"{host}:*")
        return None

    @model_validator(mode="after")
    def _mcp_waits_are_ordered(self) -> Settings:
        if self.rpa_mcp_wait_seconds > self.rpa_mcp_max_wait_seconds:
            raise ValueError("RPA_MCP_WAIT_SECONDS: must not exceed RPA_MCP_MAX_WAIT_SECONDS")
        return self

    @property
    def drain_seconds(self) -> float:
        if self.rpa_drain_seconds is not None:
            return self.rpa_drain_seconds
        return self.xiaowu_rpa_timeout + 15.0

    @property
    def kafka_on(self) -> bool:
        return bool(self.kafka_servers) and self.kafka_enable is not False

    @property
    def backend(self) -> Literal["local", "astron"]:
        if self.rpa_backend is not None:
            return self.rpa_backend
        return "astron" if self.xiaowu_rpa_task_create_url else "local"

    @model_validator(mode="after")
    def _astron_needs_its_urls(self) -> Settings:
        if self.backend == "astron" and not self.xiaowu_rpa_task_create_url:
            raise ValueError("XIAOWU_RPA_TASK_CREATE_URL: must be set when RPA_BACKEND is astron")
        return self

    @model_validator(mode="after")
    def _query_url_goes_with_create_url(self) -> Settings:
        if self.xiaowu_rpa_task_create_url and not self.xiaowu_rpa_task_query_url:
            raise ValueError(
                "XIAOWU_RPA_TASK_QUERY_URL: must be set when XIAOWU_RPA_TASK_CREATE_URL is set"
            )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listed(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def decode_key(text: str) -> bytes:
    """A 32-byte key from URL-safe base64; the error never repeats the value."""
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise ValueError("must be 32 bytes in URL-safe base64 (make one: rpa-gateway keygen)")
    return key


class ConfigError(Exception):
    """Start-up configuration is invalid; the message is one line per problem."""


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning validation errors into lines naming the key."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            lines.append(f"{str(error['loc'][0]).upper()}: {message}")
        else:
            lines.append(message)
    return "\n".join(lines)

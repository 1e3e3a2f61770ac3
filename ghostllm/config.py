"""GhostLLM configuration: one YAML file, then environment variables on top.

Secrets never live in the YAML: a provider names the environment variable that
holds its key (`api_key_env`). Every value of the `server` section can be
overridden with `GHOSTLLM_SERVER_<KEY>`, a nested section's with its path
(`GHOSTLLM_SERVER_TLS_CERT_FILE`, `GHOSTLLM_SERVER_CORS_ALLOW_ORIGINS`), and every
provider field with `GHOSTLLM_PROVIDER_<ID>_<KEY>` (ID upper-cased, `-` as `_`),
the store's with `GHOSTLLM_STORE_<KEY>` (`DATABASE_URL` counts as `GHOSTLLM_STORE_URL`
when that is unset), the accounts' with `GHOSTLLM_ACCOUNTS_<KEY>`, auth's with
`GHOSTLLM_AUTH_<KEY>`, the limits' with `GHOSTLLM_LIMITS_<KEY>`, Redis's with
`GHOSTLLM_REDIS_<KEY>` (`REDIS_URL` accepted), the catalogue's with `GHOSTLLM_CATALOGUE_<KEY>`,
routing's with `GHOSTLLM_ROUTING_<KEY>`, tracing's with `GHOSTLLM_TRACING_<KEY>`, so a
deployment can change ports or base URLs without editing the file. A list given in the
environment is comma-separated; `id` and mappings (`headers`) are YAML only.

The sections are dataclasses and the loader walks their fields generically: a
new setting is a new field, a new section a new dataclass field. An unknown key
anywhere is an error that names its path (`server.tls.cert_fil`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ghostllm.errors import ConfigError

DEFAULT_CONFIG_FILE = "ghostllm.yaml"


class Capability(StrEnum):
    """What a model in the catalogue can do (config lists them by these names)."""

    CHAT = "chat"
    STREAMING = "streaming"
    FUNCTIONS = "functions"
    VISION = "vision"
    EMBEDDINGS = "embeddings"
    COMPLETIONS = "completions"
    # The provider can hold an answer to a JSON schema (response_format json_schema) natively.
    STRUCTURED_OUTPUT = "structured_output"


CAPABILITIES = tuple(c.value for c in Capability)


def default_workers() -> int:
    # One busy worker uses about 1.5 cores (main thread plus grpc's threads). Never
    # fewer than two: a crashed worker must not leave Envoy without a healthy host
    # (and on 2 cores two workers measured ~10 % more throughput than one).
    return max(2, round((os.cpu_count() or 1) / 1.5))


@dataclass(frozen=True)
class TLSConfig:
    cert_file: str = ""
    key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file and self.key_file)


@dataclass(frozen=True)
class CORSConfig:
    # Origins browsers may call from (exact, or "*"); empty means CORS is off.
    allow_origins: tuple[str, ...] = ()
    # PATCH, PUT and DELETE: the admin API.
    allow_methods: tuple[str, ...] = ("GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS")
    # Besides our own, what the openai JS SDK sends from a browser (its x-stainless-*
    # platform, retry, timeout and helper headers, user-agent, organization/project), and
    # W3C trace context (what browser tracing instrumentation adds).
    allow_headers: tuple[str, ...] = (
        "authorization",
        "content-type",
        "x-request-id",
        "traceparent",
        "tracestate",
        "openai-organization",
        "openai-project",
        "user-agent",
        "x-stainless-arch",
        "x-stainless-helper-method",
        "x-stainless-lang",
        "x-stainless-os",
        "x-stainless-package-version",
        "x-stainless-retry-count",
        "x-stainless-runtime",
        "x-stainless-runtime-version",
        "x-stainless-timeout",
    )
    # What browser scripts may read: the request id, the rate-limit headers OpenAI clients use, and
    # ours (the deployment that served, the gateway's own overhead).
    expose_headers: tuple[str, ...] = (
        "x-request-id",
        "retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "x-ghostllm-deployment",
        "x-ghostllm-overhead-ms",
    )
    max_age_s: int = 86400
    allow_credentials: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.allow_origins)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    rest_port: int = 8080
    grpc_port: int = 50051
    admin_port: int = 9901
    # Prometheus exposition (GET /metrics) for every worker and Envoy, on `host`; 0: no metrics.
    metrics_port: int = 9090
    # 0 means "derive from the cores".
    workers: int = 0
    # Each worker gets its own port (Envoy round-robins; SO_REUSEPORT would
    # pin all of Envoy's traffic on one worker). Keep below the ephemeral range.
    worker_base_port: int = 20100
    max_request_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 600.0
    # A non-streaming answer is silent until it is complete, so idle must cover it too.
    stream_idle_timeout_s: float = 600.0
    shutdown_grace_s: float = 30.0
    envoy_base_id: int = 0
    envoy_concurrency: int = 1
    run_dir: str = ""
    log_level: str = "INFO"
    # Where GhostLLM keeps its own files (the embedded SQLite store); relative to the working directory.
    data_dir: str = ".ghostllm"
    # Envoy's access log: "stdout", "off", or a file path.
    access_log: str = "stdout"
    tls: TLSConfig = field(default_factory=TLSConfig)
    cors: CORSConfig = field(default_factory=CORSConfig)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else default_workers()

    @property
    def max_response_bytes(self) -> int:
        """The largest non-streaming answer: Envoy buffers it whole, a worker reads an
        upstream's no further (over it: 502)."""
        return max(self.max_request_bytes, 64 * 1024 * 1024)


SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class StoreConfig:
    # postgresql://user@host:5432/db or sqlite:///path (sqlite:////abs/path for an absolute path).
    # Empty: sqlite:///<server.data_dir>/ghostllm.db (the loader fills it in).
    url: str = ""
    # PostgreSQL connection pool bounds, per process.
    pool_min_size: int = 1
    pool_max_size: int = 10
    # How long to wait for a connection (at start-up, and from a busy pool).
    connect_timeout_s: float = 10.0

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith(SQLITE_PREFIX)


@dataclass(frozen=True)
class AccountsConfig:
    # bcrypt's work factor for user passwords (2**cost rounds; 12 is about 0.25 s).
    bcrypt_cost: int = 12


@dataclass(frozen=True)
class AuthConfig:
    # Off only when said so: every start then logs a warning, and every caller is an admin.
    enabled: bool = True
    # Lifetime of a login token (POST /v1/auth/login).
    token_ttl_s: int = 3600
    # How long a worker trusts a cached key or user before asking the store again. Without
    # Redis this is what bounds how late a revocation is seen; with Redis, changes are pushed
    # and this only applies while the subscription is down.
    key_cache_ttl_s: float = 2.0
    # With Redis subscribed: the backstop TTL.
    key_cache_ttl_pushed_s: float = 60.0
    # How long a key check may wait for the store before the caller gets 503.
    store_timeout_s: float = 2.0
    # last_used_at is written in batches, at most this often per worker.
    last_used_flush_s: float = 5.0
    # The login throttle (POST /v1/auth/login): failed logins per email and per client IP, each
    # counted over login_window_s from its first failure. At a limit, every further attempt for
    # that email or from that address (the right password too) gets 429 with retry-after until
    # the window lapses, before bcrypt runs; a successful login clears its email's count. Shared
    # in Redis when configured, else counted by each worker on its own (N workers: up to N x the
    # limit). 0 turns a limit off; login_window_s 0 turns both off.
    login_max_failures: int = 10
    login_max_failures_per_ip: int = 50
    login_window_s: float = 900.0

    @property
    def admin_key(self) -> str:
        """GHOSTLLM_ADMIN_KEY: a master admin key (environment only)."""
        return os.environ.get("GHOSTLLM_ADMIN_KEY", "")

    @property
    def jwt_secret(self) -> str:
        """GHOSTLLM_JWT_SECRET (environment only); empty: a generated file in the data dir."""
        return os.environ.get("GHOSTLLM_JWT_SECRET", "")


@dataclass(frozen=True)
class LedgerConfig:
    # One usage_logs row per request, written in batches this often (and when 500 are waiting).
    enabled: bool = True
    flush_interval_s: float = 0.5


@dataclass(frozen=True)
class RedisConfig:
    # redis://host:6379/0; empty: no Redis (in-process fallbacks). REDIS_URL is accepted too.
    url: str = ""
    # Namespaces every key and channel, so deployments can share one Redis.
    prefix: str = "ghostllm:"


@dataclass(frozen=True)
class LimitsConfig:
    # Per minute and concurrent, for a key whose own limit is unset (0: no limit). A key's own
    # value (rate_limit, tpm_limit, max_parallel) wins, 0 included; a team's come from the store.
    default_rpm: int = 0
    default_tpm: int = 0
    default_parallel: int = 0
    # Per user, over all of the user's keys and login tokens together (0: no limit).
    user_rpm: int = 0
    user_tpm: int = 0
    user_parallel: int = 0
    # Completion tokens reserved at admission for a request that sets no max_tokens and whose
    # model has no max_output_tokens (the real count replaces it when the request ends).
    completion_estimate: int = 256
    # Redis unreachable or slow: "open" serves unchecked (a warning at most once a minute), "closed" answers 503.
    on_redis_error: str = "open"
    # The deadline of one Redis round trip.
    redis_timeout_s: float = 0.2
    # How long a parallel slot outlives a worker that died holding it; 0: server.request_timeout_s + 60.
    slot_ttl_s: float = 0.0


@dataclass(frozen=True)
class CatalogueConfig:
    # How often each worker asks the store whether providers or models changed (one small
    # query, never in the request path). Without Redis this bounds how late an admin change
    # is seen (at most 5 s); with Redis, changes are pushed and this applies only while the
    # subscription is down.
    poll_s: float = 1.5
    # With Redis subscribed: the backstop.
    poll_pushed_s: float = 30.0
    # How often `serve` asks the providers with `discover_models` for their model lists again
    # (in the background; the lists are cached in between, and /v1/models never waits on a
    # provider). A provider that does not answer keeps its last list.
    discovery_interval_s: float = 300.0


# How `model: "auto"` ranks the models it may choose (routing/auto.py).
PREFERENCES = ("cheapest", "fastest", "order")
# The model name that asks the gateway to choose.
AUTO_MODEL = "auto"


@dataclass(frozen=True)
class AutoConfig:
    """`model: "auto"`: the gateway chooses among the models the caller's key may use that offer
    the endpoint's capability and have a healthy deployment."""

    # Off: "auto" is an ordinary model name (an unknown one, unless the catalogue has it).
    enabled: bool = True
    # cheapest: lowest input + output price per 1M tokens (the model's cheapest deployment);
    # fastest: lowest time to first token this worker has measured (unmeasured ones first, or
    # they would never be measured); order: as listed in `order`.
    prefer: str = "cheapest"
    # The models auto may choose, in this order where the preference ties (and the order itself
    # for prefer: order); empty: every model, in catalogue order. Ids not in the catalogue (yet:
    # discovered and store models count too) are skipped.
    order: tuple[str, ...] = ()
    # How many further candidates, in preference order, a request falls back to when the chosen
    # model fails retryably before answering (0: none).
    fallbacks: int = 3


@dataclass(frozen=True)
class RoutingConfig:
    # Provider health (routing/health.py): each worker checks every provider this often in the
    # background (the provider's model listing, never a paid completion) and GET /health reads
    # the last results, never waiting on a provider.
    health_check_interval_s: float = 15.0
    # One check's limit: a provider that has not answered by then is unhealthy until its next check.
    health_check_timeout_s: float = 3.0
    # Retries on the same deployment after a retryable failure, before the next deployment is
    # tried (a model's own `retries` overrides it).
    retries: int = 1
    # Jittered exponential backoff between retries on one deployment: base * 2**n, at most max.
    backoff_base_s: float = 0.1
    backoff_max_s: float = 2.0
    # An upstream's retry-after is waited for up to this long; a longer one moves on to the
    # next deployment at once.
    retry_after_cap_s: float = 5.0
    # No attempt starts later than this after the request's first one (its retry budget).
    retry_budget_s: float = 30.0
    # Passive circuit breaking, per deployment and worker: circuit_failures failures in a row, or
    # a failure rate of circuit_failure_rate over at least circuit_min_requests attempts within
    # circuit_window_s, open the circuit for circuit_cooldown_s; then one probe is let through,
    # whose success closes it (a failure opens it again).
    circuit_failures: int = 5
    circuit_failure_rate: float = 0.5
    circuit_min_requests: int = 20
    circuit_window_s: float = 60.0
    circuit_cooldown_s: float = 30.0
    # Weight of the newest sample in the per-deployment latency moving averages (least-latency).
    latency_alpha: float = 0.2
    # A time-to-first-token average older than this is forgotten: least-latency (and auto's
    # fastest) then tries that deployment again, as if never measured, so one that was slow
    # once is not avoided for good; its next sample starts the average afresh.
    latency_stale_s: float = 60.0
    auto: AutoConfig = field(default_factory=AutoConfig)


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry tracing (ghostllm/tracing/): spans exported over OTLP/HTTP (protobuf)."""

    # Off: no span is made and nothing is exported; a client's traceparent is still passed upstream.
    enabled: bool = False
    # The collector's OTLP/HTTP address: a base URL (http://collector:4318, /v1/traces is added) or
    # the traces URL itself. Empty: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT
    # (+ /v1/traces), else http://localhost:4318/v1/traces.
    endpoint: str = ""
    service_name: str = "ghostllm"
    # The share of new traces recorded; a request whose caller sent a traceparent follows its sampled flag.
    sample_ratio: float = 1.0
    # Sent with every export (YAML only). A secret (a collector's token) belongs in
    # OTEL_EXPORTER_OTLP_HEADERS, which is read too; these win over it.
    headers: Mapping[str, str] = field(default_factory=dict)


def default_store_url(data_dir: str) -> str:
    return f"{SQLITE_PREFIX}{Path(data_dir) / 'ghostllm.db'}"


@dataclass(frozen=True)
class ProviderConfig:
    id: str
    type: str = "openai"
    base_url: str = ""
    api_key_env: str = ""
    connect_timeout_s: float = 5.0
    # Time allowed for a whole non-streaming answer, and the default of the two below.
    timeout_s: float = 600.0
    # Until the first output: a whole non-streaming answer, a stream's first bytes (0: timeout_s).
    ttft_timeout_s: float = 0.0
    # Silence allowed between two reads of a stream (0: timeout_s).
    idle_timeout_s: float = 0.0
    max_connections: int = 512
    # Ask the upstream for usage in streams (stream_options.include_usage) so
    # every streamed token is accounted for, even when the client did not ask.
    stream_usage: bool = True
    # Register the models the upstream lists (local servers such as Ollama): at start-up, then
    # every catalogue.discovery_interval_s.
    discover_models: bool = False
    # Start the built-in development upstream on base_url's port if nothing answers there.
    dev_upstream: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    # The API version a provider type takes (Azure OpenAI's api-version query); empty: the adapter's default.
    api_version: str = ""
    # The key stored (encrypted) for this provider in the store, decrypted by the worker that
    # loaded it. Never read from the YAML or the environment, never shown by repr (nor logged).
    stored_api_key: str = field(default="", repr=False, metadata={"yaml": False})

    @property
    def api_key(self) -> str:
        """The stored key when there is one (the database wins), else `api_key_env`'s value."""
        if self.stored_api_key:
            return self.stored_api_key
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    @functools.cached_property
    def address(self) -> tuple[str, int]:
        """base_url's host and port, the scheme's default port if it names none."""
        parts = urlsplit(self.base_url)
        return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


STRATEGIES = ("priority", "weighted", "least-latency", "least-busy", "lowest-cost")


@dataclass(frozen=True)
class DeploymentConfig:
    """One deployment of a model: a provider and the upstream's name for the model, with its own
    weight (weighted routing) and prices (None: the model's)."""

    provider: str
    upstream_model: str = ""
    weight: float = 1.0
    input_price_per_1m: float | None = None
    output_price_per_1m: float | None = None
    # Its own limits (None: the provider's), as the provider's fields of the same names, and
    # `timeout_s` bounds a stream's whole length too (else only the server's stream limit does).
    connect_timeout_s: float | None = None
    ttft_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class ModelConfig:
    id: str
    # The single-deployment form; with `deployments`, the loader sets it to the first one's.
    provider: str = ""
    upstream_model: str = ""
    context_length: int = 0
    input_price_per_1m: float = 0.0
    output_price_per_1m: float = 0.0
    capabilities: tuple[str, ...] = ("chat", "streaming", "functions", "completions")
    owned_by: str = ""
    # USD per 1M prompt tokens the provider served from its cache (None: the input price).
    cached_input_price_per_1m: float | None = None
    # The max_tokens sent when the client gave none, to providers that require one (Anthropic);
    # 0: the adapter's own default.
    max_output_tokens: int = 0
    # Several deployments (instead of provider + upstream_model), how a request picks among
    # them, the models tried in order when every deployment failed, and a routing.retries override.
    deployments: tuple[DeploymentConfig, ...] = ()
    strategy: str = "priority"
    fallbacks: tuple[str, ...] = ()
    retries: int | None = None
    # The single form's deployment limits (DeploymentConfig's); with `deployments`, each has its own.
    connect_timeout_s: float | None = None
    ttft_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    timeout_s: float | None = None

    @property
    def upstream(self) -> str:
        return self.upstream_model or self.id

    @property
    def targets(self) -> tuple[DeploymentConfig, ...]:
        """The deployments, each with its upstream model filled in (the single form is one)."""
        if not self.deployments:
            return (
                DeploymentConfig(
                    self.provider,
                    self.upstream,
                    connect_timeout_s=self.connect_timeout_s,
                    ttft_timeout_s=self.ttft_timeout_s,
                    idle_timeout_s=self.idle_timeout_s,
                    timeout_s=self.timeout_s,
                ),
            )
        return tuple(d if d.upstream_model else replace(d, upstream_model=self.id) for d in self.deployments)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    catalogue: CatalogueConfig = field(default_factory=CatalogueConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    providers: tuple[ProviderConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    # The file it was read from: set by the loader, not a YAML key.
    source: str = field(default="", metadata={"yaml": False})

    def provider(self, provider_id: str) -> ProviderConfig:
        for p in self.providers:
            if p.id == provider_id:
                return p
        raise KeyError(provider_id)


def _coerce(value: Any, target: Any, where: str) -> Any:
    """Convert a YAML or environment scalar to the field's type."""
    if target is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if target is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if target is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"{where}: unsupported field type {target!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _path(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _is_sequence(hint: Any) -> bool:
    return typing.get_origin(hint) in (tuple, list)


def _is_mapping(hint: Any) -> bool:
    return typing.get_origin(hint) in (dict, Mapping)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """A YAML value as `hint`: dataclasses, tuples/lists and mappings are walked; an
    optional scalar (`float | None`) takes null as None."""
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        return None if value is None else _convert(value, next(a for a in args if a is not type(None)), where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, where)
    if _is_sequence(hint):
        if value is None:
            value = []
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = [_convert(v, typing.get_args(hint)[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if typing.get_origin(hint) is tuple else items
    if _is_mapping(hint):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(hint)
        return {
            _convert(k, key_type, _path(where, k)): _convert(v, value_type, _path(where, k)) for k, v in value.items()
        }
    return _coerce(value, hint, where)


def _build(cls: Any, data: Any, where: str) -> Any:
    """An instance of the dataclass `cls` from the mapping `data` found at `where`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls) if f.metadata.get("yaml", True)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        kind = "key(s)" if where else "section(s)"
        raise ConfigError(f"unknown {kind} {', '.join(_path(where, k) for k in unknown)}; known: {', '.join(known)}")
    for f in known.values():
        if f.name not in data and f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{where}: {f.name} is required")
    hints = _hints(cls)
    return cls(**{name: _convert(value, hints[name], _path(where, name)) for name, value in data.items()})


def _env_key(provider_id: str) -> str:
    return provider_id.upper().replace("-", "_").replace(".", "_")


def _from_env(text: str, hint: Any, key: str) -> Any | None:
    """An environment value as `hint` (a list is comma-separated); None where the
    field cannot be given in the environment (a mapping, a list of sections)."""
    if _is_mapping(hint):
        return None
    if _is_sequence(hint):
        item = typing.get_args(hint)[0]
        if dataclasses.is_dataclass(item) or _is_mapping(item) or _is_sequence(item):
            return None
        return _convert([s.strip() for s in text.split(",") if s.strip()], hint, key)
    return _coerce(text, hint, key)


def _apply_env(obj: Any, prefix: str, env: Mapping[str, str]) -> Any:
    """`obj` with the fields the environment names (`prefix` + KEY) replaced;
    a nested section's fields are named `prefix` + SECTION_KEY."""
    hints = _hints(type(obj))
    changes: dict[str, Any] = {}
    for f in fields(obj):
        if not f.metadata.get("yaml", True):
            continue  # not configurable (a value the code fills in)
        key, hint = f"{prefix}{f.name.upper()}", hints[f.name]
        if dataclasses.is_dataclass(hint):
            current = getattr(obj, f.name)
            updated = _apply_env(current, f"{key}_", env)
            if updated is not current:
                changes[f.name] = updated
        elif key in env and f.name != "id":
            value = _from_env(env[key], hint, key)
            if value is not None:
                changes[f.name] = value
    return replace(obj, **changes) if changes else obj


def _store(store: StoreConfig, server: ServerConfig, env: Mapping[str, str]) -> StoreConfig:
    """The store section with the environment applied (GHOSTLLM_STORE_*, and the seed's
    DATABASE_URL when GHOSTLLM_STORE_URL is unset) and the default URL filled in."""
    if "GHOSTLLM_STORE_URL" not in env and env.get("DATABASE_URL"):
        store = replace(store, url=env["DATABASE_URL"])
    store = _apply_env(store, "GHOSTLLM_STORE_", env)
    return store if store.url else replace(store, url=default_store_url(server.data_dir))


def _redis(redis: RedisConfig, env: Mapping[str, str]) -> RedisConfig:
    if "GHOSTLLM_REDIS_URL" not in env and env.get("REDIS_URL"):
        redis = replace(redis, url=env["REDIS_URL"])
    updated: RedisConfig = _apply_env(redis, "GHOSTLLM_REDIS_", env)
    return updated


# Where a provider type's official SDK points when given no base URL.
DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "ollama": "http://localhost:11434",
}


def _default_base_url(p: ProviderConfig) -> ProviderConfig:
    return p if p.base_url or p.type not in DEFAULT_BASE_URLS else replace(p, base_url=DEFAULT_BASE_URLS[p.type])


def _validate(config: Config) -> None:
    """Rules beyond types: required values, references, duplicates, known names."""
    if not config.server.access_log:
        raise ConfigError("server.access_log: expected stdout, off or a file path")
    if not config.server.data_dir:
        raise ConfigError("server.data_dir: expected a directory")
    if not 0 <= config.server.metrics_port <= 65535:
        raise ConfigError("server.metrics_port: expected a port (0: no metrics)")
    url = config.store.url
    if not (url.startswith(POSTGRES_PREFIXES) or (url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX))):
        raise ConfigError("store.url: expected postgresql://... or sqlite:///path")
    if not 0 <= config.store.pool_min_size <= config.store.pool_max_size or config.store.pool_max_size < 1:
        raise ConfigError("store: expected 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1")
    if not 4 <= config.accounts.bcrypt_cost <= 31:
        raise ConfigError("accounts.bcrypt_cost: expected 4 to 31")
    auth = config.auth
    if not 0 < auth.key_cache_ttl_s <= 5:
        raise ConfigError(
            "auth.key_cache_ttl_s: expected more than 0 and at most 5 (a revocation must be seen within 5 s)"
        )
    if auth.key_cache_ttl_pushed_s < auth.key_cache_ttl_s:
        raise ConfigError("auth.key_cache_ttl_pushed_s: expected at least auth.key_cache_ttl_s")
    if auth.token_ttl_s < 60 or auth.store_timeout_s <= 0 or auth.last_used_flush_s <= 0:
        raise ConfigError("auth: expected token_ttl_s >= 60, store_timeout_s > 0 and last_used_flush_s > 0")
    for name in ("login_max_failures", "login_max_failures_per_ip", "login_window_s"):
        if getattr(auth, name) < 0:
            raise ConfigError(f"auth.{name}: expected 0 (off) or more")
    if not 0 < config.ledger.flush_interval_s <= 60:
        raise ConfigError("ledger.flush_interval_s: expected more than 0 and at most 60")
    if config.redis.url and not config.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis.url: expected redis://host:port/db, rediss://... or unix://...")
    lim = config.limits
    if min(lim.default_rpm, lim.default_tpm, lim.default_parallel, lim.user_rpm, lim.user_tpm, lim.user_parallel) < 0:
        raise ConfigError("limits: expected limits >= 0 (0: no limit)")
    if lim.on_redis_error not in ("open", "closed"):
        raise ConfigError(f"limits.on_redis_error: expected open or closed, got {lim.on_redis_error!r}")
    if not 0 < lim.redis_timeout_s <= 5 or lim.slot_ttl_s < 0 or lim.completion_estimate < 0:
        raise ConfigError("limits: expected 0 < redis_timeout_s <= 5, slot_ttl_s >= 0 and completion_estimate >= 0")
    if not 0 < config.catalogue.poll_s <= 4:
        raise ConfigError("catalogue.poll_s: expected more than 0 and at most 4 (a change must be seen within 5 s)")
    if config.catalogue.poll_pushed_s < config.catalogue.poll_s:
        raise ConfigError("catalogue.poll_pushed_s: expected at least catalogue.poll_s")
    if not config.catalogue.discovery_interval_s > 0:
        raise ConfigError("catalogue.discovery_interval_s: expected more than 0")
    routing = config.routing
    if not 0 < routing.health_check_timeout_s <= routing.health_check_interval_s:
        raise ConfigError("routing: expected 0 < health_check_timeout_s <= health_check_interval_s")
    for i, p in enumerate(config.providers):
        if not p.id:
            raise ConfigError(f"providers[{i}]: id is required")
        if not p.base_url:
            raise ConfigError(f"provider {p.id}: base_url is required (type {p.type} has no default)")
        if any(q.id == p.id for q in config.providers[:i]):
            raise ConfigError(f"provider {p.id}: defined twice")
        if p.connect_timeout_s <= 0 or p.timeout_s <= 0 or p.ttft_timeout_s < 0 or p.idle_timeout_s < 0:
            raise ConfigError(
                f"provider {p.id}: expected connect_timeout_s and timeout_s > 0, ttft_timeout_s and"
                " idle_timeout_s >= 0 (0: timeout_s)"
            )
    _validate_retries(config.routing)
    _validate_auto(config.routing.auto, config.models)
    _validate_tracing(config.tracing)
    ids = {p.id for p in config.providers}
    model_ids = {m.id for m in config.models}
    for i, m in enumerate(config.models):
        if not m.id:
            raise ConfigError(f"models[{i}]: id is required")
        bad = [c for c in m.capabilities if c not in CAPABILITIES]
        if bad:
            raise ConfigError(f"models[{i}].capabilities: unknown {bad}; known: {', '.join(CAPABILITIES)}")
        _validate_deployments(m, f"models[{i}]", ids)
        if m.strategy not in STRATEGIES:
            raise ConfigError(f"models[{i}].strategy: unknown {m.strategy!r}; known: {', '.join(STRATEGIES)}")
        for j, f in enumerate(m.fallbacks):
            if f == m.id:
                raise ConfigError(f"models[{i}].fallbacks[{j}]: model {m.id} cannot fall back to itself")
            if f not in model_ids:
                raise ConfigError(f"models[{i}].fallbacks[{j}]: unknown model {f!r}")
        if m.retries is not None and not 0 <= m.retries <= MAX_RETRIES:
            raise ConfigError(f"models[{i}].retries: expected 0 to {MAX_RETRIES}")
        if any(q.id == m.id for q in config.models[:i]):
            raise ConfigError(f"model {m.id}: defined twice")


TIMEOUT_FIELDS = ("connect_timeout_s", "ttft_timeout_s", "idle_timeout_s", "timeout_s")
# Retries on one deployment, at most (routing.retries, a model's own, a store model's).
MAX_RETRIES = 10


def _validate_timeouts(entry: DeploymentConfig | ModelConfig, where: str) -> None:
    for name in TIMEOUT_FIELDS:
        value = getattr(entry, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{where}.{name}: expected more than 0 (or unset: the provider's), got {value:g}")


def _validate_deployments(m: ModelConfig, where: str, providers: set[str]) -> None:
    _validate_timeouts(m, where)
    if not m.deployments:
        if not m.provider:
            raise ConfigError(f"{where}: provider (or deployments) is required")
        if m.provider not in providers:
            raise ConfigError(f"{where}.provider: model {m.id}: unknown provider {m.provider!r}")
        return
    # The loader fills `provider` in from the first deployment, so a parsed config reads back.
    if m.upstream_model or (m.provider and m.provider != m.deployments[0].provider):
        raise ConfigError(f"{where}: give provider and upstream_model, or deployments, not both")
    if any(getattr(m, name) is not None for name in TIMEOUT_FIELDS):
        raise ConfigError(f"{where}: with deployments, give timeouts on each deployment")
    for j, d in enumerate(m.deployments):
        _validate_timeouts(d, f"{where}.deployments[{j}]")
        if d.provider not in providers:
            raise ConfigError(f"{where}.deployments[{j}].provider: model {m.id}: unknown provider {d.provider!r}")
        if d.weight < 0:
            raise ConfigError(f"{where}.deployments[{j}].weight: expected 0 or more, got {d.weight:g}")
        if any(p is not None and p < 0 for p in (d.input_price_per_1m, d.output_price_per_1m)):
            raise ConfigError(f"{where}.deployments[{j}]: expected prices of 0 or more")
    keys = [(d.provider, d.upstream_model or m.id) for d in m.deployments]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}.deployments: the same provider and upstream model listed twice")


def _validate_retries(r: RoutingConfig) -> None:
    if not 0 <= r.retries <= MAX_RETRIES:
        raise ConfigError(f"routing.retries: expected 0 to {MAX_RETRIES}")
    if r.backoff_base_s < 0 or r.backoff_max_s < r.backoff_base_s:
        raise ConfigError("routing: expected 0 <= backoff_base_s <= backoff_max_s")
    if r.retry_after_cap_s < 0 or r.retry_budget_s <= 0:
        raise ConfigError("routing: expected retry_after_cap_s >= 0 and retry_budget_s > 0")
    if r.circuit_failures < 1 or r.circuit_min_requests < 1:
        raise ConfigError("routing: expected circuit_failures >= 1 and circuit_min_requests >= 1")
    if not 0 < r.circuit_failure_rate <= 1:
        raise ConfigError("routing.circuit_failure_rate: expected more than 0 and at most 1")
    if r.circuit_window_s <= 0 or r.circuit_cooldown_s <= 0:
        raise ConfigError("routing: expected circuit_window_s > 0 and circuit_cooldown_s > 0")
    if not 0 < r.latency_alpha <= 1:
        raise ConfigError("routing.latency_alpha: expected more than 0 and at most 1")
    if not r.latency_stale_s > 0:
        raise ConfigError("routing.latency_stale_s: expected more than 0")


def _validate_auto(auto: AutoConfig, models: tuple[ModelConfig, ...]) -> None:
    # Unknown ids in `order` are not an error: discovered and store models are not known here.
    if auto.prefer not in PREFERENCES:
        raise ConfigError(f"routing.auto.prefer: unknown {auto.prefer!r}; known: {', '.join(PREFERENCES)}")
    if auto.prefer == "order" and not auto.order:
        raise ConfigError("routing.auto.order: required when routing.auto.prefer is order")
    for i, m in enumerate(auto.order):
        if m == AUTO_MODEL:
            raise ConfigError(f"routing.auto.order[{i}]: {AUTO_MODEL!r} is not a model")
        if m in auto.order[:i]:
            raise ConfigError(f"routing.auto.order[{i}]: {m!r} listed twice")
    if not 0 <= auto.fallbacks <= 10:
        raise ConfigError("routing.auto.fallbacks: expected 0 to 10")
    if auto.enabled:
        for i, model in enumerate(models):
            if model.id == AUTO_MODEL:
                raise ConfigError(
                    f"models[{i}]: the id {AUTO_MODEL!r} is routing.auto's; rename the model"
                    " or set routing.auto.enabled: false"
                )


def _validate_tracing(t: TracingConfig) -> None:
    if not 0 <= t.sample_ratio <= 1:
        raise ConfigError("tracing.sample_ratio: expected 0 to 1")
    if t.endpoint and not t.endpoint.startswith(("http://", "https://")):
        raise ConfigError("tracing.endpoint: expected http://host:port or https://... (OTLP over HTTP)")
    if not t.service_name:
        raise ConfigError("tracing.service_name: expected a name")


def _primary(m: ModelConfig) -> ModelConfig:
    """A model with deployments names its first one's provider too (for callers that show one)."""
    return replace(m, provider=m.deployments[0].provider) if m.deployments and not m.provider else m


def parse_config(raw: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "") -> Config:
    env = os.environ if env is None else env
    config: Config = _build(Config, raw, "")
    server = _apply_env(config.server, "GHOSTLLM_SERVER_", env)
    config = replace(
        config,
        server=server,
        store=_store(config.store, server, env),
        accounts=_apply_env(config.accounts, "GHOSTLLM_ACCOUNTS_", env),
        auth=_apply_env(config.auth, "GHOSTLLM_AUTH_", env),
        redis=_redis(config.redis, env),
        ledger=_apply_env(config.ledger, "GHOSTLLM_LEDGER_", env),
        limits=_apply_env(config.limits, "GHOSTLLM_LIMITS_", env),
        catalogue=_apply_env(config.catalogue, "GHOSTLLM_CATALOGUE_", env),
        routing=_apply_env(config.routing, "GHOSTLLM_ROUTING_", env),
        tracing=_apply_env(config.tracing, "GHOSTLLM_TRACING_", env),
        providers=tuple(
            _default_base_url(_apply_env(p, f"GHOSTLLM_PROVIDER_{_env_key(p.id)}_", env)) for p in config.providers
        ),
        source=source,
    )
    _validate(config)
    return replace(config, models=tuple(_primary(m) for m in config.models))


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true and false. `access_log: off` or
    `log_level: no` stay strings; a boolean field still reads on/off/yes/no."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Load the YAML file named by `path`, $GHOSTLLM_CONFIG or ./ghostllm.yaml."""
    env = os.environ if env is None else env
    chosen = Path(path or env.get("GHOSTLLM_CONFIG") or DEFAULT_CONFIG_FILE)
    try:
        text = chosen.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {chosen}: {exc.strerror}") from exc
    try:
        raw = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{chosen}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{chosen}: expected a mapping at the top level")
    return parse_config(raw, env=env, source=str(chosen.resolve()))

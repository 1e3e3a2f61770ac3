"""GhostLLM configuration: one YAML file, then environment variables on top.

Secrets never live in the YAML: a provider names the environment variable that
holds its key (`api_key_env`). Every scalar of the `server` section can be
overridden with `GHOSTLLM_SERVER_<KEY>` and every provider field with
`GHOSTLLM_PROVIDER_<ID>_<KEY>` (ID upper-cased, `-` as `_`), so a deployment can
change ports or base URLs without editing the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ghostllm.errors import ConfigError

DEFAULT_CONFIG_FILE = "ghostllm.yaml"
PROVIDER_TYPES = ("openai",)
CAPABILITIES = ("chat", "streaming", "functions", "vision", "embeddings", "completions")


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
class ServerConfig:
    host: str = "0.0.0.0"
    rest_port: int = 8080
    grpc_port: int = 50051
    admin_port: int = 9901
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
    tls: TLSConfig = field(default_factory=TLSConfig)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else default_workers()


@dataclass(frozen=True)
class ProviderConfig:
    id: str
    type: str = "openai"
    base_url: str = ""
    api_key_env: str = ""
    connect_timeout_s: float = 5.0
    # Time allowed for a whole non-streaming answer, and between two reads of a stream.
    timeout_s: float = 600.0
    max_connections: int = 512
    # Ask the upstream for usage in streams (stream_options.include_usage) so
    # every streamed token is accounted for, even when the client did not ask.
    stream_usage: bool = True
    # Register the models the upstream lists at start-up (local servers such as Ollama).
    discover_models: bool = False
    # Start the built-in development upstream on base_url's port if nothing answers there.
    dev_upstream: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""


@dataclass(frozen=True)
class ModelConfig:
    id: str
    provider: str
    upstream_model: str = ""
    context_length: int = 0
    input_price_per_1m: float = 0.0
    output_price_per_1m: float = 0.0
    capabilities: tuple[str, ...] = ("chat", "streaming", "functions", "completions")
    owned_by: str = ""

    @property
    def upstream(self) -> str:
        return self.upstream_model or self.id


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    providers: tuple[ProviderConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    source: str = ""

    def provider(self, provider_id: str) -> ProviderConfig:
        for p in self.providers:
            if p.id == provider_id:
                return p
        raise KeyError(provider_id)


def _coerce(value: Any, target: Any, where: str) -> Any:
    """Convert a YAML or environment value to the dataclass field's type."""
    if target in (int, "int"):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if target in (float, "float"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if target in (bool, "bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if target in (str, "str"):
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: Any, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = known[name]
        if name == "tls":
            kwargs[name] = _build(TLSConfig, value or {}, f"{where}.tls")
        elif name == "capabilities":
            caps = tuple(str(c) for c in (value or ()))
            bad = [c for c in caps if c not in CAPABILITIES]
            if bad:
                raise ConfigError(f"{where}.capabilities: unknown {bad}; known: {', '.join(CAPABILITIES)}")
            kwargs[name] = caps
        elif name == "headers":
            kwargs[name] = {str(k): str(v) for k, v in (value or {}).items()}
        else:
            kwargs[name] = _coerce(value, f.type, f"{where}.{name}")
    return cls(**kwargs)


def _env_key(provider_id: str) -> str:
    return provider_id.upper().replace("-", "_").replace(".", "_")


def _apply_env(obj: Any, prefix: str, env: Mapping[str, str]) -> Any:
    changes: dict[str, Any] = {}
    for f in fields(obj):
        key = f"{prefix}{f.name.upper()}"
        if key in env and f.name not in ("tls", "headers", "capabilities", "id"):
            changes[f.name] = _coerce(env[key], f.type, key)
    if isinstance(obj, ServerConfig):
        tls = _apply_env(obj.tls, f"{prefix}TLS_", env)
        if tls != obj.tls:
            changes["tls"] = tls
    return replace(obj, **changes) if changes else obj


def parse_config(raw: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "") -> Config:
    env = os.environ if env is None else env
    unknown = set(raw) - {"server", "providers", "models"}
    if unknown:
        raise ConfigError(f"{source or 'config'}: unknown section(s) {', '.join(sorted(unknown))}")
    server = _build(ServerConfig, raw.get("server") or {}, "server")
    server = _apply_env(server, "GHOSTLLM_SERVER_", env)

    providers: list[ProviderConfig] = []
    for i, item in enumerate(raw.get("providers") or ()):
        p = _build(ProviderConfig, item, f"providers[{i}]")
        if not p.id:
            raise ConfigError(f"providers[{i}]: id is required")
        p = _apply_env(p, f"GHOSTLLM_PROVIDER_{_env_key(p.id)}_", env)
        if p.type not in PROVIDER_TYPES:
            raise ConfigError(f"provider {p.id}: unknown type {p.type!r}; known: {', '.join(PROVIDER_TYPES)}")
        if not p.base_url:
            raise ConfigError(f"provider {p.id}: base_url is required")
        if any(q.id == p.id for q in providers):
            raise ConfigError(f"provider {p.id}: defined twice")
        providers.append(p)

    ids = {p.id for p in providers}
    models: list[ModelConfig] = []
    for i, item in enumerate(raw.get("models") or ()):
        m = _build(ModelConfig, item, f"models[{i}]")
        if not m.id:
            raise ConfigError(f"models[{i}]: id is required")
        if m.provider not in ids:
            raise ConfigError(f"model {m.id}: unknown provider {m.provider!r}")
        if any(q.id == m.id for q in models):
            raise ConfigError(f"model {m.id}: defined twice")
        models.append(m)
    return Config(server=server, providers=tuple(providers), models=tuple(models), source=source)


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Load the YAML file named by `path`, $GHOSTLLM_CONFIG or ./ghostllm.yaml."""
    env = os.environ if env is None else env
    chosen = Path(path or env.get("GHOSTLLM_CONFIG") or DEFAULT_CONFIG_FILE)
    try:
        text = chosen.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {chosen}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{chosen}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{chosen}: expected a mapping at the top level")
    return parse_config(raw, env=env, source=str(chosen.resolve()))

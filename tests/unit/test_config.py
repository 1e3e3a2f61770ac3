"""ghostllm.config: YAML plus environment overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghostllm.config import CORSConfig, load_config, parse_config
from ghostllm.errors import ConfigError
from ghostllm.providers.factory import check_provider_types

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "providers": [{"id": "my-openai", "type": "openai", "base_url": "https://example.test/v1", "api_key_env": "K"}],
    "models": [{"id": "m", "provider": "my-openai", "input_price_per_1m": 1}],
}


def test_repo_example_config_loads() -> None:
    config = load_config(ROOT / "ghostllm.yaml", env={})
    assert config.server.rest_port == 8080 and config.server.grpc_port == 50051
    assert config.server.worker_base_port + config.server.worker_count < 32768
    assert [m.id for m in config.models][:1] == ["dev-echo"]


def test_env_overrides() -> None:
    env = {
        "GHOSTLLM_SERVER_REST_PORT": "9090",
        "GHOSTLLM_SERVER_TLS_CERT_FILE": "c.pem",
        "GHOSTLLM_PROVIDER_MY_OPENAI_BASE_URL": "http://other/v1",
        "GHOSTLLM_PROVIDER_MY_OPENAI_STREAM_USAGE": "false",
        "K": "sk-secret",
    }
    config = parse_config(BASE, env=env)
    assert config.server.rest_port == 9090
    assert config.server.tls.cert_file == "c.pem" and not config.server.tls.enabled
    provider = config.provider("my-openai")
    assert provider.base_url == "http://other/v1" and provider.stream_usage is False
    assert config.models[0].upstream == "m" and config.models[0].input_price_per_1m == 1.0


def test_api_key_comes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "sk-from-env")
    assert parse_config(BASE, env={}).provider("my-openai").api_key == "sk-from-env"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"server": {"rest_prot": 1}}, "unknown key"),
        ({"server": {"rest_port": "eighty"}}, "expected an integer"),
        ({"extra": {}}, "unknown section"),
        ({"providers": [{"id": "x"}]}, "base_url is required"),
        ({"models": [{"id": "m", "provider": "ghost"}]}, "unknown provider"),
        ({**BASE, "models": [{"id": "m", "provider": "my-openai", "capabilities": ["telepathy"]}]}, "capabilities"),
    ],
)
def test_errors(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"server": {"tls": {"cert_fil": "c.pem"}}}, "server.tls.cert_fil"),
        ({"server": {"cors": {"allow_origin": ["*"]}}}, "server.cors.allow_origin"),
        ({"providers": [{"id": "p", "base_url": "u", "base_ur": "u"}]}, r"providers\[0\].base_ur"),
        ({**BASE, "models": [{"id": "m", "provider": "my-openai", "pricing": 1}]}, r"models\[0\].pricing"),
    ],
)
def test_unknown_key_is_named_with_its_path(raw: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown key.* {path};"):
        parse_config(raw, env={})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"server": {"cors": {"allow_origins": "https://a.test"}}}, "server.cors.allow_origins: expected a list"),
        (
            {"server": {"cors": {"allow_origins": ["https://a.test", 7.5, {}]}}},
            r"allow_origins\[2\]: expected a string",
        ),
        ({"server": {"cors": {"max_age_s": "a day"}}}, "server.cors.max_age_s: expected an integer"),
        ({"server": {"tls": "on"}}, "server.tls: expected a mapping"),
        ({"providers": {"id": "p"}}, "providers: expected a list"),
        ({"providers": [{"base_url": "u"}]}, r"providers\[0\]: id is required"),
        (
            {"providers": [{"id": "p", "base_url": "u", "headers": ["x"]}]},
            r"providers\[0\].headers: expected a mapping",
        ),
        ({"server": {"access_log": ""}}, "server.access_log"),
        ({"auth": {"login_max_failures": -1}}, r"auth\.login_max_failures: expected 0 \(off\) or more"),
        ({"auth": {"login_window_s": -5}}, r"auth\.login_window_s: expected 0"),
    ],
)
def test_type_errors_name_the_value(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, env={})


def test_new_server_fields_default() -> None:
    server = parse_config({}, env={}).server
    assert server.access_log == "stdout"
    cors = server.cors
    assert cors.allow_origins == () and not cors.enabled
    assert cors.allow_methods == ("GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS")
    assert {"authorization", "content-type", "x-request-id"} <= set(cors.allow_headers)
    # What the openai JS SDK sends from a browser.
    assert {"x-stainless-retry-count", "x-stainless-timeout", "x-stainless-os", "x-stainless-lang"} <= set(
        cors.allow_headers
    )
    assert cors.expose_headers[0] == "x-request-id" and "x-ratelimit-remaining-requests" in cors.expose_headers
    assert cors.max_age_s == 86400 and cors.allow_credentials is False


def test_cors_access_log_and_lists_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "server:\n"
        "  access_log: off\n"  # a string, not YAML 1.1's false
        "  cors:\n"
        "    allow_origins: [https://app.example.com, 'http://localhost:3000']\n"
        "    allow_headers:\n"
        "      - authorization\n"
        "      - content-type\n"
        "    max_age_s: 600\n"
        "    allow_credentials: yes\n"
        "providers:\n"
        "  - {id: p, base_url: 'http://u/v1', stream_usage: off, headers: {X-Team: ml, X-Tier: 2}}\n"
        "models:\n"
        "  - {id: m, provider: p, capabilities: [chat, embeddings]}\n"
    )
    config = load_config(path, env={})
    assert config.server.access_log == "off"
    cors = config.server.cors
    assert cors.enabled and cors.allow_origins == ("https://app.example.com", "http://localhost:3000")
    assert cors.allow_headers == ("authorization", "content-type") and cors.max_age_s == 600
    assert cors.allow_credentials is True and cors.allow_methods == CORSConfig().allow_methods
    provider = config.provider("p")
    assert provider.stream_usage is False and provider.headers == {"X-Team": "ml", "X-Tier": "2"}
    assert config.models[0].capabilities == ("chat", "embeddings")
    assert config.source == str(path.resolve())


def test_env_overrides_nested_sections_and_lists() -> None:
    env = {
        "GHOSTLLM_SERVER_ACCESS_LOG": "/var/log/ghostllm/access.log",
        "GHOSTLLM_SERVER_CORS_ALLOW_ORIGINS": "https://a.example, https://b.example,",
        "GHOSTLLM_SERVER_CORS_MAX_AGE_S": "60",
        "GHOSTLLM_SERVER_CORS_ALLOW_CREDENTIALS": "true",
        "GHOSTLLM_SERVER_TLS_KEY_FILE": "k.pem",
        # Not overridable from the environment: the id (it names the variables) and mappings.
        "GHOSTLLM_PROVIDER_MY_OPENAI_ID": "other",
        "GHOSTLLM_PROVIDER_MY_OPENAI_HEADERS": "x=y",
    }
    raw = {**BASE, "server": {"cors": {"allow_origins": ["https://yaml.example"], "max_age_s": 5}}}
    config = parse_config(raw, env=env)
    assert config.server.access_log == "/var/log/ghostllm/access.log"
    cors = config.server.cors
    assert cors.allow_origins == ("https://a.example", "https://b.example")
    assert cors.max_age_s == 60 and cors.allow_credentials is True
    assert cors.allow_methods == CORSConfig().allow_methods  # untouched fields keep YAML/defaults
    assert config.server.tls.key_file == "k.pem" and config.server.tls.cert_file == ""
    provider = config.provider("my-openai")
    assert provider.headers == {}


def test_env_override_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="GHOSTLLM_SERVER_CORS_MAX_AGE_S: expected an integer"):
        parse_config({}, env={"GHOSTLLM_SERVER_CORS_MAX_AGE_S": "forever"})


def test_unknown_provider_type_is_named_by_the_provider_factory() -> None:
    # The factory holds the one list of provider types; `ghostllm` checks every config against it.
    config = parse_config({"providers": [{"id": "x", "type": "carrier-pigeon", "base_url": "u"}]}, env={})
    with pytest.raises(ConfigError, match="unknown type 'carrier-pigeon'; known: openai"):
        check_provider_types(config)


def test_store_url_defaults_to_sqlite_in_the_data_dir() -> None:
    config = parse_config({}, env={})
    assert config.server.data_dir == ".ghostllm"
    assert config.store.url == "sqlite:///.ghostllm/ghostllm.db" and config.store.is_sqlite
    moved = parse_config({}, env={"GHOSTLLM_SERVER_DATA_DIR": "/var/lib/ghostllm"})
    assert moved.store.url == "sqlite:////var/lib/ghostllm/ghostllm.db"


def test_store_url_from_yaml_and_environment() -> None:
    pg = "postgresql://gl@db:5432/gl"
    assert parse_config({"store": {"url": pg}}, env={}).store.url == pg
    assert parse_config({}, env={"GHOSTLLM_STORE_URL": pg}).store.url == pg
    # The seed's DATABASE_URL counts when GHOSTLLM_STORE_URL is unset, and only then.
    assert parse_config({"store": {"url": "sqlite:///x.db"}}, env={"DATABASE_URL": pg}).store.url == pg
    both = {"DATABASE_URL": pg, "GHOSTLLM_STORE_URL": "sqlite:///y.db"}
    assert parse_config({}, env=both).store.url == "sqlite:///y.db"
    assert parse_config({}, env={"GHOSTLLM_STORE_POOL_MAX_SIZE": "3"}).store.pool_max_size == 3


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://x.db", "sqlite:///", "redis://localhost"])
def test_store_url_must_be_postgresql_or_sqlite(url: str) -> None:
    with pytest.raises(ConfigError, match=r"store\.url"):
        parse_config({"store": {"url": url}}, env={})

"""ghostllm.config: YAML plus environment overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghostllm.config import load_config, parse_config
from ghostllm.errors import ConfigError

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
        ({"providers": [{"id": "x", "type": "carrier-pigeon", "base_url": "u"}]}, "unknown type"),
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

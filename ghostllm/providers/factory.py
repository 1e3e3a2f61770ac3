"""The provider factory: the one list of provider types, used to build providers
and to validate configuration."""

from __future__ import annotations

from ghostllm.config import Config, ProviderConfig, ServerConfig
from ghostllm.errors import ConfigError
from ghostllm.providers.anthropic import AnthropicTranslator
from ghostllm.providers.azure import AzureTranslator
from ghostllm.providers.base import Provider
from ghostllm.providers.gemini import GeminiTranslator
from ghostllm.providers.ollama import OllamaTranslator
from ghostllm.providers.openai import OpenAITranslator
from ghostllm.providers.translator import Translator

TRANSLATORS: dict[str, type[Translator]] = {
    "openai": OpenAITranslator,
    "anthropic": AnthropicTranslator,
    "gemini": GeminiTranslator,
    "ollama": OllamaTranslator,
    "azure": AzureTranslator,
}
# The limit a default server config sets (config.ServerConfig.max_response_bytes is the one rule).
DEFAULT_MAX_RESPONSE_BYTES = ServerConfig().max_response_bytes


def check_provider_types(config: Config) -> None:
    for p in config.providers:
        if p.type not in TRANSLATORS:
            raise ConfigError(f"provider {p.id}: unknown type {p.type!r}; known: {', '.join(TRANSLATORS)}")


def _before(envoy_limit_s: float) -> float | None:
    return max(0.5, envoy_limit_s - 1.0) if envoy_limit_s > 0 else None


def stream_total_s(config: Config) -> float | None:
    """How long a stream may run: ended by the worker (with an in-band error event and a
    usage record saying so) a second before Envoy's route timeout would cut it silently."""
    return _before(config.server.request_timeout_s)


def stream_silence_s(config: Config) -> float | None:
    """The longest a stream may go silent whatever its deployment allows (before its first
    bytes too): ended by the worker before Envoy's idle timeout would cut it without an error event."""
    return _before(config.server.stream_idle_timeout_s)


def make_provider(
    config: ProviderConfig,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    stream_total_s: float | None = None,
    stream_silence_s: float | None = None,
) -> Provider:
    # Imported here: validating a config (`serve` does it first thing) needs only the
    # translators, not the HTTP stack (aiohttp alone is ~0.15 s of start-up).
    from ghostllm.providers.http import HTTPProvider

    translator = TRANSLATORS[config.type](config)
    return HTTPProvider(config, translator, max_response_bytes, stream_total_s, stream_silence_s)

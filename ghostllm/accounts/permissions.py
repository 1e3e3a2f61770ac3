"""What an API key may do, in the seed's JSON shape:
`{"chat_completions": true, "completions": true, "embeddings": true, "models": ["gpt-4"]}`.

An endpoint flag that is absent is not granted (the seed lists what a key has), except
`list_models` (the catalogue, `/v1/models`), granted unless it is false. `models` absent
or null: any model; a list: only those (`"*"` in it: any).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ghostllm.errors import InvalidRequest
from ghostllm.protocol.endpoints import Endpoint

# JSON flag per endpoint.
FLAGS = {
    Endpoint.CHAT: "chat_completions",
    Endpoint.COMPLETIONS: "completions",
    Endpoint.EMBEDDINGS: "embeddings",
    Endpoint.MODELS: "list_models",
}
# The CLI's --endpoints names.
ENDPOINT_NAMES = {"chat": Endpoint.CHAT, "completions": Endpoint.COMPLETIONS, "embeddings": Endpoint.EMBEDDINGS}
ENDPOINT_NAMES["models"] = Endpoint.MODELS
MAX_MODELS = 100
MAX_MODEL_NAME = 200


@dataclass(frozen=True)
class Permissions:
    endpoints: frozenset[Endpoint] = frozenset(Endpoint)
    # None: any model.
    models: tuple[str, ...] | None = None

    def allows(self, endpoint: Endpoint, model: str | None = None) -> bool:
        """May the key call `endpoint` (with `model`, when the call names one)?"""
        if endpoint not in self.endpoints:
            return False
        return model is None or self.allows_model(model)

    def allows_model(self, model: str) -> bool:
        return self.models is None or "*" in self.models or model in self.models

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {flag: endpoint in self.endpoints for endpoint, flag in FLAGS.items()}
        if self.models is not None:
            out["models"] = list(self.models)
        return out

    @classmethod
    def from_json(cls, data: object, *, param: str = "permissions") -> Permissions:
        if not isinstance(data, Mapping):
            raise InvalidRequest(f"{param}: expected an object", param=param, code="invalid_type")
        known = {*FLAGS.values(), "models"}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InvalidRequest(
                f"{param}.{unknown[0]}: unknown permission; known: {', '.join(sorted(known))}",
                param=f"{param}.{unknown[0]}",
                code="invalid_value",
            )
        endpoints = set()
        for endpoint, flag in FLAGS.items():
            value = data.get(flag, endpoint is Endpoint.MODELS)
            if not isinstance(value, bool):
                raise InvalidRequest(
                    f"{param}.{flag}: expected true or false", param=f"{param}.{flag}", code="invalid_type"
                )
            if value:
                endpoints.add(endpoint)
        return cls(frozenset(endpoints), parse_models(data.get("models"), param=f"{param}.models"))

    @classmethod
    def from_names(cls, endpoints: list[str] | None, models: list[str] | None) -> Permissions:
        """From the CLI's `--endpoints chat,completions` and `--models a,b` (None: all)."""
        chosen = frozenset(Endpoint)
        if endpoints is not None:
            bad = [e for e in endpoints if e not in ENDPOINT_NAMES]
            if bad:
                raise InvalidRequest(
                    f"endpoints: unknown {bad[0]!r}; known: {', '.join(ENDPOINT_NAMES)}", param="endpoints"
                )
            chosen = frozenset(ENDPOINT_NAMES[e] for e in endpoints)
        return cls(chosen, parse_models(models, param="models"))


def parse_models(value: object, *, param: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
        raise InvalidRequest(f"{param}: expected a list of model names", param=param, code="invalid_type")
    if len(value) > MAX_MODELS:
        raise InvalidRequest(f"{param}: at most {MAX_MODELS} models", param=param, code="invalid_value")
    for m in value:
        if not 0 < len(m) <= MAX_MODEL_NAME or not m.isprintable() or any(c.isspace() for c in m):
            raise InvalidRequest(
                f"{param}: a model name is 1 to {MAX_MODEL_NAME} printable characters without spaces",
                param=param,
                code="invalid_value",
            )
    return tuple(dict.fromkeys(value))

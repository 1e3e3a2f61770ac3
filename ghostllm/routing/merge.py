"""The catalogue's sources merged: providers and models from the YAML config and from the
store; the store wins.

- A store provider with the id of a config one replaces it: the row's type, base_url and
  `config` JSON (any provider setting: timeouts, headers, ...) go over the config's values,
  and its stored key (decrypted by the worker) over the config's `api_key_env`; without a
  stored key, `api_key_env` still applies. A store provider of a new id is added.
- A store provider with enabled=false removes that provider, and every model it serves.
- A store model replaces the config model of its id, or is added.
- A store model brings its deployments, strategy, fallbacks and retries, as a config model
  does; a deployment whose provider exists nowhere is left out (the model too, when that was
  its last).
- What cannot be used is left out with a warning, never the reason a reload fails: a store
  provider whose definition is invalid (the config's, if any, stands), a model with unknown
  capabilities, strategy or unreadable deployments (a row edited by hand), a model whose
  provider exists nowhere.

Pure: the worker reads the store and decrypts (server/catalogue_sync.py); this only decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ghostllm.config import CAPABILITIES, MAX_RETRIES, STRATEGIES, Config, ModelConfig, ProviderConfig, parse_config
from ghostllm.errors import ConfigError
from ghostllm.providers.factory import TRANSLATORS


@dataclass(frozen=True)
class StoredProvider:
    """A providers row as the merge needs it."""

    id: str
    enabled: bool
    type: str
    base_url: str
    # The row's `config` JSON: ProviderConfig fields by their YAML names.
    settings: Mapping[str, Any] = field(default_factory=dict)
    # The decrypted stored key; "" when none is stored.
    api_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class Merged:
    providers: tuple[ProviderConfig, ...]
    models: tuple[ModelConfig, ...]
    # What was left out and why, for the log (never a key).
    warnings: tuple[str, ...] = ()

    def config(self, base: Config) -> Config:
        """`base` serving the merged providers and models."""
        return replace(base, providers=self.providers, models=self.models)


def _yaml_fields(provider: ProviderConfig) -> dict[str, Any]:
    return {f.name: getattr(provider, f.name) for f in dataclasses.fields(provider) if f.metadata.get("yaml", True)}


def stored_provider_config(row: StoredProvider, base: ProviderConfig | None) -> ProviderConfig:
    """The row over the config's provider of its id (if any), checked as the config would be.
    The environment is not applied again: the config's values already carry it."""
    data = _yaml_fields(base) if base is not None else {}
    data.update(row.settings)
    data.update(id=row.id, type=row.type, base_url=row.base_url)
    built = parse_config({"providers": [data]}, env={}).providers[0]
    if built.type not in TRANSLATORS:
        raise ConfigError(f"unknown type {built.type!r}; known: {', '.join(TRANSLATORS)}")
    return replace(built, stored_api_key=row.api_key) if row.api_key else built


def _model_problem(m: ModelConfig) -> str | None:
    unknown = [c for c in m.capabilities if c not in CAPABILITIES]
    if unknown:
        return f"unknown capabilities {unknown}"
    if not m.capabilities:
        return "no capabilities"
    if m.strategy not in STRATEGIES:
        return f"unknown strategy {m.strategy!r}"
    if any(not d.provider or not d.weight > 0 for d in m.deployments):
        return "a deployment that cannot be read"
    if m.retries is not None and not 0 <= m.retries <= MAX_RETRIES:
        return f"retries {m.retries} out of range"
    return None


def merge(config: Config, providers: Iterable[StoredProvider], models: Iterable[ModelConfig]) -> Merged:
    warnings: list[str] = []
    merged: dict[str, ProviderConfig] = {p.id: p for p in config.providers}
    disabled: set[str] = set()
    for row in sorted(providers, key=lambda r: r.id):
        if not row.enabled:
            disabled.add(row.id)
            merged.pop(row.id, None)
            continue
        base = merged.get(row.id)
        try:
            merged[row.id] = stored_provider_config(row, base)
        except ConfigError as exc:
            stands = "the config's definition stands" if base is not None else "left out"
            warnings.append(f"provider {row.id}: the store's definition is not usable ({exc}); {stands}")

    entries: dict[str, ModelConfig] = {m.id: m for m in config.models}
    for m in sorted(models, key=lambda m: m.id):
        problem = _model_problem(m)
        if problem is not None:
            stands = "the config's definition stands" if m.id in entries else "left out"
            warnings.append(f"model {m.id}: the store's definition is not usable ({problem}); {stands}")
            continue
        entries[m.id] = m

    served: list[ModelConfig] = []
    for m in entries.values():
        if not m.deployments:
            if m.provider in merged:
                served.append(m)
            elif m.provider not in disabled:  # a disabled provider's models go quietly: that is what disabling means
                warnings.append(
                    f"model {m.id}: provider {m.provider!r} is in neither the config nor the store; left out"
                )
            continue
        # A config model with several deployments keeps those whose provider is still there.
        kept = tuple(d for d in m.deployments if d.provider in merged)
        for d in m.deployments:
            if d.provider not in merged and d.provider not in disabled:
                warnings.append(f"model {m.id}: provider {d.provider!r} is in neither the config nor the store")
        if kept:
            served.append(
                m if len(kept) == len(m.deployments) else replace(m, provider=kept[0].provider, deployments=kept)
            )
        else:
            warnings.append(f"model {m.id}: none of its deployments' providers is served; left out")
    return Merged(tuple(merged.values()), tuple(served), tuple(warnings))

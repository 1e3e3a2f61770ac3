"""Models in the store (the `models` table): the catalogue entries managed at runtime
through the admin API and the CLI, merged over the YAML config's (the store wins; see
ghostllm.routing.merge).

Every field is validated before anything reaches SQL (an InvalidRequest naming it), all
SQL is parameterized, and every mutation writes its audit_log row in the same transaction.
Providers and fallbacks are checked for shape only: they may be defined in the YAML config,
which has no rows in the store (the admin API checks that they exist; the catalogue leaves
out, with a warning, a deployment whose provider exists nowhere, and skips unknown fallbacks).

A model is served by one deployment (provider_id + upstream_model, the `deployments` column
empty) or by several (the column lists them; provider_id and upstream_model then mirror the
first's, so listings and the provider index stay meaningful), as a config model is."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ghostllm.accounts import rows, validation
from ghostllm.accounts.audit import CLI, Actor, record
from ghostllm.accounts.records import ModelRecord
from ghostllm.accounts.repository import UNSET, Unset
from ghostllm.accounts.writes import update, write
from ghostllm.config import (
    CAPABILITIES,
    MAX_RETRIES,
    STRATEGIES,
    TIMEOUT_FIELDS,
    Capability,
    DeploymentConfig,
    ModelConfig,
)
from ghostllm.errors import AlreadyExists, InvalidRequest, NotFound
from ghostllm.store import Store

__all__ = ["DEFAULT_CAPABILITIES", "ModelRecord", "ModelRepository"]

DEFAULT_CAPABILITIES = ModelConfig("", "").capabilities
# Model names, public (what clients send as `model`) or the provider's: segments of letters,
# digits and . _ : @ + -, each starting with a letter or digit, joined by single '/'
# (vendor/model, hf.co/org/model:Q4): no spaces, quotes, empty or '..' segments.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*(?:/[A-Za-z0-9][A-Za-z0-9._:@+-]*)*$")
MAX_MODEL_ID = 128
MAX_UPSTREAM = 256
_NAME_RULE = "letters, digits, '.', '_', ':', '@', '+', '-'; '/' between parts, each starting with a letter or digit"
MAX_OWNED_BY = 64
MAX_DEPLOYMENTS = 32
MAX_FALLBACKS = 16
MAX_WEIGHT = 1e6


def _bad(field: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", param=field, code=code)


def _is_name(value: str, max_length: int) -> bool:
    return len(value) <= max_length and _NAME.match(value) is not None


def check_id(value: str) -> str:
    if not isinstance(value, str) or not _is_name(value, MAX_MODEL_ID):
        raise _bad("id", f"expected 1 to {MAX_MODEL_ID} characters: {_NAME_RULE}")
    return value


def check_upstream(value: str) -> str:
    if not isinstance(value, str):
        raise _bad("upstream_model", "expected a string", "invalid_type")
    if value and not _is_name(value, MAX_UPSTREAM):
        raise _bad("upstream_model", f"expected '' (the id) or up to {MAX_UPSTREAM} characters: {_NAME_RULE}")
    return value


def check_context_length(value: int) -> int:
    checked = validation.limit("context_length", value)
    if checked is None:
        raise _bad("context_length", "expected a whole number (0: unknown)", "invalid_type")
    return checked


def check_price(field: str, value: float) -> float:
    checked = validation.money(field, value)
    if checked is None:
        raise _bad(field, "expected a number (USD per 1M tokens)", "invalid_type")
    return checked


def check_capabilities(value: Sequence[str] | None) -> tuple[str, ...]:
    """Known names only, at least one; stored once each, in the config's order."""
    if value is None:
        return DEFAULT_CAPABILITIES
    if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) > 4 * len(CAPABILITIES):
        raise _bad("capabilities", f"expected a list of: {', '.join(CAPABILITIES)}", "invalid_type")
    unknown = [v for v in value if not isinstance(v, str) or v not in CAPABILITIES]
    if unknown:
        raise _bad("capabilities", f"{len(unknown)} unknown name(s); known: {', '.join(CAPABILITIES)}")
    if not value:
        raise _bad("capabilities", f"expected at least one of: {', '.join(CAPABILITIES)}")
    return tuple(c for c in CAPABILITIES if c in value)


def check_owned_by(value: str) -> str:
    return validation.text("owned_by", value, max_length=MAX_OWNED_BY)


def _within(prefix: str, error: InvalidRequest) -> InvalidRequest:
    """`error` about a field of an item in a list, named by its place (deployments[1].provider)."""
    inner = error.param or ""
    where = f"{prefix}.{inner}" if inner else prefix
    message = str(error.message).removeprefix(f"{inner}: ") if inner else str(error.message)
    return InvalidRequest(f"{where}: {message}", param=where, code=error.code)


def _list(field: str, value: Sequence[Any], most: int) -> Sequence[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise _bad(field, "expected a list", "invalid_type")
    if len(value) > most:
        raise _bad(field, f"expected at most {most} entries")
    return value


def _weight(field: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(field, "expected a number", "invalid_type")
    if not math.isfinite(value) or not 0 < value <= MAX_WEIGHT:
        raise _bad(field, f"expected more than 0 and at most {MAX_WEIGHT:g}")
    return float(value)


def check_deployment(where: str, d: DeploymentConfig) -> DeploymentConfig:
    if not isinstance(d, DeploymentConfig):
        raise _bad(where, "expected a deployment (provider, upstream_model, weight, prices)", "invalid_type")
    try:
        provider = validation.provider_id(d.provider)
        upstream = check_upstream(d.upstream_model)
        prices = [
            None if p is None else check_price(name, p)
            for name, p in (
                ("input_price_per_1m", d.input_price_per_1m),
                ("output_price_per_1m", d.output_price_per_1m),
            )
        ]
        timeouts = {name: _timeout(name, getattr(d, name)) for name in TIMEOUT_FIELDS}
    except InvalidRequest as exc:
        raise _within(where, exc) from None
    return DeploymentConfig(provider, upstream, _weight(f"{where}.weight", d.weight), prices[0], prices[1], **timeouts)


# A deployment's timeouts are seconds, at most this (a day: longer is a typo, not a limit).
MAX_TIMEOUT_S = 86_400.0


def _timeout(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= MAX_TIMEOUT_S:
        raise _bad(name, f"expected seconds, more than 0 and at most {MAX_TIMEOUT_S:g} (or absent: the provider's)")
    return float(value)


def check_deployments(model_id: str, value: Sequence[DeploymentConfig]) -> tuple[DeploymentConfig, ...]:
    """At least one, each well-formed, no provider and upstream model twice."""
    checked = tuple(
        check_deployment(f"deployments[{i}]", d) for i, d in enumerate(_list("deployments", value, MAX_DEPLOYMENTS))
    )
    if not checked:
        raise _bad("deployments", "expected at least one deployment")
    seen: set[tuple[str, str]] = set()
    for i, d in enumerate(checked):
        key = (d.provider, d.upstream_model or model_id)
        if key in seen:
            raise _bad(f"deployments[{i}]", f"provider {d.provider} and upstream model {key[1]} are listed twice")
        seen.add(key)
    return checked


def check_strategy(value: str) -> str:
    if not isinstance(value, str):
        raise _bad("strategy", f"expected one of {', '.join(STRATEGIES)}", "invalid_type")
    if value not in STRATEGIES:
        raise _bad("strategy", f"unknown strategy {value[:100]!r}; known: {', '.join(STRATEGIES)}")
    return value


def check_fallbacks(model_id: str, value: Sequence[str] | None) -> tuple[str, ...]:
    """Model ids, each once, never the model itself (None: none)."""
    if value is None:
        return ()
    found: list[str] = []
    for i, f in enumerate(_list("fallbacks", value, MAX_FALLBACKS)):
        if not isinstance(f, str) or not _is_name(f, MAX_MODEL_ID):
            raise _bad(f"fallbacks[{i}]", f"expected a model id: 1 to {MAX_MODEL_ID} characters: {_NAME_RULE}")
        if f == model_id:
            raise _bad(f"fallbacks[{i}]", f"model {model_id} cannot fall back to itself")
        if f in found:
            raise _bad(f"fallbacks[{i}]", f"model {f} is listed twice")
        found.append(f)
    return tuple(found)


def check_retries(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("retries", "expected a whole number", "invalid_type")
    if not 0 <= value <= MAX_RETRIES:
        raise _bad("retries", f"expected 0 to {MAX_RETRIES}")
    return value


def _one_form(deployments: tuple[DeploymentConfig, ...], provider: str, upstream_model: str) -> None:
    """provider + upstream_model, or deployments; the first deployment's own values restated are fine."""
    first = deployments[0]
    if (provider and provider != first.provider) or (upstream_model and upstream_model != first.upstream_model):
        raise _bad("deployments", "give provider and upstream_model, or deployments, not both")


def _deployment_columns(deployments: tuple[DeploymentConfig, ...]) -> dict[str, Any]:
    """The deployments and the first one's provider and upstream model, which mirror it."""
    return {
        "provider_id": deployments[0].provider,
        "upstream_model": deployments[0].upstream_model,
        "deployments": json.dumps([dataclasses.asdict(d) for d in deployments]),
    }


def _capability_columns(names: tuple[str, ...]) -> dict[str, Any]:
    """capabilities and the seed's supports_* flags, which mirror it."""
    return {
        "capabilities": json.dumps(list(names)),
        "supports_vision": Capability.VISION in names,
        "supports_funcs": Capability.FUNCTIONS in names,
        "supports_stream": Capability.STREAMING in names,
    }


def _single_changed(current: ModelRecord, single: dict[str, str]) -> dict[str, Any]:
    """provider or upstream_model given for a model stored with deployments: its one
    deployment changes (its weight and prices kept); with several, which one is meant is unknown."""
    if len(current.deployments) > 1:
        field = "provider" if "provider_id" in single else "upstream_model"
        raise _bad(
            field,
            f"model {current.id} has {len(current.deployments)} deployments: change them with deployments",
        )
    first = current.deployments[0]
    changed = replace(
        first,
        provider=single.get("provider_id", first.provider),
        upstream_model=single.get("upstream_model", first.upstream_model),
    )
    return _deployment_columns((changed,))


class ModelRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create_model(
        self,
        model_id: str,
        *,
        provider: str = "",
        upstream_model: str = "",
        context_length: int = 0,
        input_price_per_1m: float = 0.0,
        output_price_per_1m: float = 0.0,
        capabilities: tuple[str, ...] | list[str] | None = None,
        owned_by: str = "",
        deployments: Sequence[DeploymentConfig] | None = None,
        strategy: str = "priority",
        fallbacks: Sequence[str] | None = None,
        retries: int | None = None,
        actor: Actor = CLI,
    ) -> ModelRecord:
        """One deployment (provider + upstream_model) or several (`deployments`)."""
        checked_id = check_id(model_id)
        if not provider and not deployments:
            raise _bad("provider", "required (or deployments)")
        values: dict[str, Any] = {
            "provider_id": validation.provider_id(provider) if provider else "",
            "upstream_model": check_upstream(upstream_model),
            "context_length": check_context_length(context_length),
            "input_price": check_price("input_price_per_1m", input_price_per_1m),
            "output_price": check_price("output_price_per_1m", output_price_per_1m),
            "owned_by": check_owned_by(owned_by),
        }
        routing: dict[str, Any] = {
            "strategy": check_strategy(strategy),
            "fallbacks": list(check_fallbacks(checked_id, fallbacks)),
            "retries": check_retries(retries),
        }
        many: list[dict[str, Any]] = []
        if deployments:
            checked = check_deployments(checked_id, deployments)
            _one_form(checked, values["provider_id"], values["upstream_model"])
            values.update(_deployment_columns(checked))
            many = [dataclasses.asdict(d) for d in checked]
        caps = check_capabilities(capabilities)
        columns = {
            **values,
            **_capability_columns(caps),
            **routing,
            "deployments": json.dumps(many),
            "fallbacks": json.dumps(routing["fallbacks"]),
        }
        names = ", ".join(columns)
        marks = ", ".join("?" * (len(columns) + 1))
        async with self.store.transaction() as tx:
            await write(
                tx,
                f"INSERT INTO models (id, {names}) VALUES ({marks})",
                (checked_id, *columns.values()),
                duplicate=AlreadyExists(f"a model {checked_id!r} already exists in the store", param="id"),
            )
            detail = {**values, "capabilities": list(caps), **routing, "deployments": many}
            await record(tx, actor, "model.create", "model", checked_id, detail)
        return await self.get_model(checked_id)

    async def get_model(self, model_id: str) -> ModelRecord:
        found = await self.find_model(model_id)
        if found is None:
            raise NotFound(f"no model {model_id!r} in the store", param="id")
        return found

    async def find_model(self, model_id: str) -> ModelRecord | None:
        checked_id = check_id(model_id)
        found = await self.store.fetch_all(f"SELECT {rows.MODEL_COLUMNS} FROM models WHERE id = ?", (checked_id,))
        return rows.model(found[0]) if found else None

    async def list_models(self) -> list[ModelRecord]:
        found = await self.store.fetch_all(f"SELECT {rows.MODEL_COLUMNS} FROM models ORDER BY id")
        return [rows.model(r) for r in found]

    async def update_model(
        self,
        model_id: str,
        *,
        provider: str | Unset = UNSET,
        upstream_model: str | Unset = UNSET,
        context_length: int | Unset = UNSET,
        input_price_per_1m: float | Unset = UNSET,
        output_price_per_1m: float | Unset = UNSET,
        capabilities: tuple[str, ...] | list[str] | Unset = UNSET,
        owned_by: str | Unset = UNSET,
        deployments: Sequence[DeploymentConfig] | Unset = UNSET,
        strategy: str | Unset = UNSET,
        fallbacks: Sequence[str] | Unset | None = UNSET,
        retries: int | Unset | None = UNSET,
        actor: Actor = CLI,
    ) -> ModelRecord:
        """The fields given change. `deployments` replaces them all; provider and upstream_model
        change the single form (or a model's one deployment), and cannot be given with it or
        for a model of several. None clears fallbacks or retries."""
        # Every value is checked before the lookup: a bad request is a 400 whether or not the model exists.
        checked_id = check_id(model_id)
        changes: dict[str, Any] = {}
        if provider is not UNSET:
            changes["provider_id"] = validation.provider_id(provider)
        if upstream_model is not UNSET:
            changes["upstream_model"] = check_upstream(upstream_model)
        if context_length is not UNSET:
            changes["context_length"] = check_context_length(context_length)
        if input_price_per_1m is not UNSET:
            changes["input_price"] = check_price("input_price_per_1m", input_price_per_1m)
        if output_price_per_1m is not UNSET:
            changes["output_price"] = check_price("output_price_per_1m", output_price_per_1m)
        if owned_by is not UNSET:
            changes["owned_by"] = check_owned_by(owned_by)
        if strategy is not UNSET:
            changes["strategy"] = check_strategy(strategy)
        if retries is not UNSET:
            changes["retries"] = check_retries(retries)
        single: dict[str, str] = {k: changes[k] for k in ("provider_id", "upstream_model") if k in changes}
        columns = dict(changes)
        if fallbacks is not UNSET:
            changes["fallbacks"] = list(check_fallbacks(checked_id, fallbacks))
            columns["fallbacks"] = json.dumps(changes["fallbacks"])
        if deployments is not UNSET:
            if single:
                raise _bad("deployments", "give provider and upstream_model, or deployments, not both")
            checked = check_deployments(checked_id, deployments)
            columns.update(_deployment_columns(checked))
            changes["deployments"] = [dataclasses.asdict(d) for d in checked]
        if capabilities is not UNSET:
            caps = check_capabilities(capabilities)
            changes["capabilities"] = list(caps)
            columns.update(_capability_columns(caps))
        if not changes:
            raise InvalidRequest("nothing to update")
        current = await self.get_model(checked_id)
        if single and current.deployments:
            columns.update(_single_changed(current, single))
        async with self.store.transaction() as tx:
            await update(tx, "models", current.id, columns)
            await record(tx, actor, "model.update", "model", current.id, changes)
        return await self.get_model(current.id)

    async def delete_model(self, model_id: str, *, actor: Actor = CLI) -> ModelRecord:
        """Gone from the store; a model of the same id in the YAML config is served again."""
        current = await self.get_model(model_id)
        async with self.store.transaction() as tx:
            await write(tx, "DELETE FROM models WHERE id = ?", (current.id,))
            await record(tx, actor, "model.delete", "model", current.id, {"provider_id": current.provider_id})
        return current

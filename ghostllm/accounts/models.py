"""Models in the store (the `models` table): the catalogue entries managed at runtime
through the admin API and the CLI, merged over the YAML config's (the store wins; see
ghostllm.routing.merge).

Every field is validated before anything reaches SQL (an InvalidRequest naming it), all
SQL is parameterized, and every mutation writes its audit_log row in the same transaction.
The provider is checked for shape only: it may be one defined in the YAML config, which
has no row in the store; the catalogue leaves out (with a warning) a model whose provider
exists nowhere."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ghostllm.accounts import rows, validation
from ghostllm.accounts.audit import CLI, Actor, record
from ghostllm.accounts.records import ModelRecord
from ghostllm.accounts.repository import UNSET, Unset
from ghostllm.accounts.writes import update, write
from ghostllm.config import CAPABILITIES, Capability, ModelConfig
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


def _capability_columns(names: tuple[str, ...]) -> dict[str, Any]:
    """capabilities and the seed's supports_* flags, which mirror it."""
    return {
        "capabilities": json.dumps(list(names)),
        "supports_vision": Capability.VISION in names,
        "supports_funcs": Capability.FUNCTIONS in names,
        "supports_stream": Capability.STREAMING in names,
    }


class ModelRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create_model(
        self,
        model_id: str,
        *,
        provider: str,
        upstream_model: str = "",
        context_length: int = 0,
        input_price_per_1m: float = 0.0,
        output_price_per_1m: float = 0.0,
        capabilities: tuple[str, ...] | list[str] | None = None,
        owned_by: str = "",
        actor: Actor = CLI,
    ) -> ModelRecord:
        checked_id = check_id(model_id)
        values: dict[str, Any] = {
            "provider_id": validation.provider_id(provider),
            "upstream_model": check_upstream(upstream_model),
            "context_length": check_context_length(context_length),
            "input_price": check_price("input_price_per_1m", input_price_per_1m),
            "output_price": check_price("output_price_per_1m", output_price_per_1m),
            "owned_by": check_owned_by(owned_by),
        }
        caps = check_capabilities(capabilities)
        columns = {**values, **_capability_columns(caps)}
        names = ", ".join(columns)
        marks = ", ".join("?" * (len(columns) + 1))
        async with self.store.transaction() as tx:
            await write(
                tx,
                f"INSERT INTO models (id, {names}) VALUES ({marks})",
                (checked_id, *columns.values()),
                duplicate=AlreadyExists(f"a model {checked_id!r} already exists in the store", param="id"),
            )
            await record(tx, actor, "model.create", "model", checked_id, {**values, "capabilities": list(caps)})
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
        actor: Actor = CLI,
    ) -> ModelRecord:
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
        columns = dict(changes)
        if capabilities is not UNSET:
            caps = check_capabilities(capabilities)
            changes["capabilities"] = list(caps)
            columns.update(_capability_columns(caps))
        if not changes:
            raise InvalidRequest("nothing to update")
        current = await self.get_model(checked_id)
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

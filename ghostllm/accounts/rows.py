"""Store rows as records. The two backends return different Python types for the same
column (PostgreSQL: UUID, Decimal, datetime, dict, bool; SQLite: str, float, ISO text,
JSON text, 0/1); these functions make them one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ghostllm.accounts.cipher import key_id_of
from ghostllm.accounts.permissions import Permissions
from ghostllm.accounts.records import (
    ApiKey,
    AuditEntry,
    ModelRecord,
    ProviderRecord,
    Role,
    Team,
    User,
)
from ghostllm.config import TIMEOUT_FIELDS, DeploymentConfig

TEAM_COLUMNS = (
    "id, name, description, budget_limit, current_spend, rate_limit, tpm_limit, max_parallel, created_at, updated_at, "
    "budget_period"
)
USER_COLUMNS = (
    "id, email, username, role, team_id, budget_limit, current_spend, is_active, "
    "password_hash IS NOT NULL, created_at, updated_at, budget_period"
)
KEY_COLUMNS = (
    "id, name, key_prefix, user_id, team_id, permissions, rate_limit, tpm_limit, max_parallel, "
    "budget_limit, current_spend, expires_at, last_used_at, is_active, created_at, budget_period"
)

AUDIT_COLUMNS = "id, actor_user_id, actor_key_id, action, target_type, target_id, detail, ip_address, created_at"

# The encrypted key is read only to say whether one is stored and under which key id.
PROVIDER_COLUMNS = "id, name, provider_type, base_url, enabled, config, api_key_enc, created_at, updated_at"
# input_price and output_price are USD per 1,000,000 tokens.
MODEL_COLUMNS = (
    "id, provider_id, upstream_model, context_length, input_price, output_price, capabilities, owned_by, "
    "created_at, updated_at, deployments, strategy, fallbacks, retries"
)


def now() -> datetime:
    return datetime.now(UTC)


def stamp(value: datetime) -> str:
    """A timestamp parameter both backends read alike (SQLite's default format)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def _money(value: Any) -> float | None:
    return None if value is None else float(value) if isinstance(value, Decimal | int | float) else float(str(value))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _required_time(value: Any) -> datetime:
    parsed = _time(value)
    assert parsed is not None
    return parsed


def team(row: tuple[Any, ...]) -> Team:
    id_, name, description, budget, spend, rpm, tpm, parallel, created, updated, period = row
    return Team(
        id=str(id_),
        name=str(name),
        description=str(description),
        budget_limit=_money(budget),
        current_spend=_money(spend) or 0.0,
        rate_limit=_int(rpm),
        tpm_limit=_int(tpm),
        max_parallel=_int(parallel),
        created_at=_required_time(created),
        updated_at=_required_time(updated),
        budget_period=_text(period),
    )


def user(row: tuple[Any, ...]) -> User:
    id_, email, username, role, team_id, budget, spend, active, has_password, created, updated, period = row
    return User(
        id=str(id_),
        email=str(email),
        username=None if username is None else str(username),
        role=Role(role),
        team_id=_id(team_id),
        budget_limit=_money(budget),
        current_spend=_money(spend) or 0.0,
        is_active=bool(active),
        has_password=bool(has_password),
        created_at=_required_time(created),
        updated_at=_required_time(updated),
        budget_period=_text(period),
    )


def api_key(row: tuple[Any, ...]) -> ApiKey:
    (
        id_,
        name,
        prefix,
        user_id,
        team_id,
        permissions,
        rpm,
        tpm,
        parallel,
        budget,
        spend,
        expires,
        used,
        active,
        created,
        period,
    ) = row
    data = json.loads(permissions) if isinstance(permissions, str | bytes) else permissions
    return ApiKey(
        id=str(id_),
        name=str(name),
        prefix=str(prefix),
        user_id=_id(user_id),
        team_id=_id(team_id),
        permissions=Permissions.from_json(data),
        rate_limit=_int(rpm),
        tpm_limit=_int(tpm),
        max_parallel=_int(parallel),
        budget_limit=_money(budget),
        current_spend=_money(spend) or 0.0,
        expires_at=_time(expires),
        last_used_at=_time(used),
        is_active=bool(active),
        created_at=_required_time(created),
        budget_period=_text(period),
    )


def sealed(value: Any) -> str | None:
    """An api_key_enc cell (BYTEA: bytes or memoryview; BLOB: bytes) as the stored token."""
    return None if value is None else bytes(value).decode("ascii", errors="replace")


def provider(row: tuple[Any, ...]) -> ProviderRecord:
    id_, name, provider_type, base_url, enabled, config, api_key_enc, created, updated = row
    data = json.loads(config) if isinstance(config, str | bytes) else config
    token = sealed(api_key_enc)
    return ProviderRecord(
        id=str(id_),
        name=str(name),
        provider_type=str(provider_type),
        base_url=str(base_url),
        enabled=bool(enabled),
        config=dict(data or {}),
        has_key=token is not None,
        key_encryption_id=None if token is None else key_id_of(token),
        created_at=_required_time(created),
        updated_at=_required_time(updated),
    )


def audit_entry(row: tuple[Any, ...]) -> AuditEntry:
    id_, actor_user, actor_key, action, target_type, target_id, detail, ip_address, created = row
    data = json.loads(detail) if isinstance(detail, str | bytes) else detail
    return AuditEntry(
        id=str(id_),
        actor_user_id=_id(actor_user),
        actor_key_id=_id(actor_key),
        action=str(action),
        target_type=str(target_type),
        target_id=str(target_id),
        detail=dict(data or {}),
        ip_address=str(ip_address),
        created_at=_required_time(created),
    )


def _names(value: Any) -> tuple[str, ...]:
    """A JSON list cell (JSONB: a list; TEXT: its JSON) as names; anything else reads as none,
    so a hand-edited row cannot break a listing (the catalogue leaves such a model out)."""
    try:
        data = json.loads(value) if isinstance(value, str | bytes) else value
    except ValueError:
        return ()
    return tuple(str(v) for v in data if isinstance(v, str)) if isinstance(data, list) else ()


# A deployment that cannot be read: no provider, so the catalogue leaves its model out (with a warning).
_UNREADABLE = DeploymentConfig(provider="")


def _deployment(value: Any) -> DeploymentConfig:
    if not isinstance(value, dict) or not isinstance(value.get("provider"), str):
        return _UNREADABLE
    try:
        optional = {
            k: None if value.get(k) is None else float(value[k])
            for k in ("input_price_per_1m", "output_price_per_1m", *TIMEOUT_FIELDS)
        }
        return DeploymentConfig(
            provider=value["provider"],
            upstream_model=str(value.get("upstream_model") or ""),
            weight=float(value.get("weight", 1.0)),
            **optional,
        )
    except (TypeError, ValueError):
        return _UNREADABLE


def _deployments(value: Any) -> tuple[DeploymentConfig, ...]:
    """A deployments cell (a JSON list of objects); a hand-edited one that does not read cannot
    break a listing: what does not read is a deployment the catalogue leaves out."""
    try:
        data = json.loads(value) if isinstance(value, str | bytes) else value
    except ValueError:
        return (_UNREADABLE,)
    if not isinstance(data, list):
        return (_UNREADABLE,)
    return tuple(_deployment(d) for d in data)


def model(row: tuple[Any, ...]) -> ModelRecord:
    id_, provider_id, upstream, context, input_price, output_price, capabilities, owned_by, created, updated = row[:10]
    deployments, strategy, fallbacks, retries = row[10:]
    return ModelRecord(
        id=str(id_),
        provider_id=str(provider_id),
        upstream_model=str(upstream),
        context_length=_int(context) or 0,
        input_price_per_1m=_money(input_price) or 0.0,
        output_price_per_1m=_money(output_price) or 0.0,
        capabilities=_names(capabilities),
        created_at=_required_time(created),
        updated_at=_required_time(updated),
        owned_by=str(owned_by),
        deployments=_deployments(deployments),
        strategy=str(strategy),
        fallbacks=_names(fallbacks),
        retries=_int(retries),
    )

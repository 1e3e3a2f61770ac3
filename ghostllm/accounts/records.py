"""The typed records the repository returns (never a password hash or a key digest)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from ghostllm.accounts.permissions import Permissions
from ghostllm.config import DeploymentConfig, ModelConfig

T = TypeVar("T")


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    VIEWER = "viewer"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    description: str
    budget_limit: float | None
    current_spend: float
    rate_limit: int | None
    tpm_limit: int | None
    max_parallel: int | None
    created_at: datetime
    updated_at: datetime
    # daily | weekly | monthly: when the budget resets (None: never). Last, with a default,
    # so positional constructions of the record stay valid.
    budget_period: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at)}


@dataclass(frozen=True)
class User:
    id: str
    email: str
    username: str | None
    role: Role
    team_id: str | None
    budget_limit: float | None
    current_spend: float
    is_active: bool
    has_password: bool
    created_at: datetime
    updated_at: datetime
    # daily | weekly | monthly: when the budget resets (None: never).
    budget_period: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "role": self.role.value,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing (users, audit entries) and where it stands in the whole."""

    items: tuple[T, ...]
    page: int
    limit: int
    total: int

    @property
    def pages(self) -> int:
        return (self.total + self.limit - 1) // self.limit


UserPage = Page[User]


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: its visible prefix, never its value or digest. A service key
    has a team and no user."""

    id: str
    name: str
    prefix: str
    user_id: str | None
    team_id: str | None
    permissions: Permissions
    rate_limit: int | None
    tpm_limit: int | None
    max_parallel: int | None
    budget_limit: float | None
    current_spend: float
    expires_at: datetime | None
    last_used_at: datetime | None
    is_active: bool
    created_at: datetime
    # daily | weekly | monthly: when the budget resets (None: never).
    budget_period: str | None = None

    @property
    def is_service_key(self) -> bool:
        return self.user_id is None

    def state(self, now: datetime) -> KeyState:
        if not self.is_active:
            return KeyState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyState.EXPIRED
        return KeyState.ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "permissions": self.permissions.to_json(),
            "expires_at": _iso(self.expires_at),
            "last_used_at": _iso(self.last_used_at),
            "created_at": _iso(self.created_at),
        }


class KeyState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    # The key is fine but its human owner was deactivated.
    OWNER_INACTIVE = "owner_inactive"


@dataclass(frozen=True)
class KeyMatch:
    """What a clear key resolves to: the key, its owner (user and/or team) and whether
    it may be used now. Only `state == ACTIVE` authenticates."""

    key: ApiKey
    user: User | None
    team: Team | None
    state: KeyState

    @property
    def usable(self) -> bool:
        return self.state is KeyState.ACTIVE


@dataclass(frozen=True)
class ProviderRecord:
    """A provider row, never its key: only whether one is stored (encrypted) and the id
    of the encryption key it is under (a public fingerprint)."""

    id: str
    name: str
    provider_type: str
    base_url: str
    enabled: bool
    config: dict[str, Any]
    has_key: bool
    key_encryption_id: str | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at)}


@dataclass(frozen=True)
class AuditEntry:
    """One audit_log row: who (user and/or key, from where) did what to what. The detail
    names what changed and never holds a secret (see audit.py)."""

    id: str
    actor_user_id: str | None
    actor_key_id: str | None
    action: str
    target_type: str
    target_id: str
    detail: dict[str, Any]
    ip_address: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": _iso(self.created_at)}


AuditPage = Page[AuditEntry]


@dataclass(frozen=True)
class ModelRecord:
    """A model row: a catalogue entry managed at runtime, merged over the config's (the store wins)."""

    id: str
    # A provider in the store or in the YAML config (the catalogue leaves the model out while
    # its provider exists nowhere, or is disabled).
    provider_id: str
    # The provider's name for it ("": the same as id).
    upstream_model: str
    context_length: int
    # USD per 1,000,000 tokens.
    input_price_per_1m: float
    output_price_per_1m: float
    # Capability names as in the config (chat, streaming, functions, vision, completions, embeddings).
    capabilities: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    # Shown as owned_by by /v1/models ("": the provider id).
    owned_by: str = ""
    # Several deployments, as a config model's `deployments` (empty: the single form,
    # provider_id + upstream_model, which then mirror the first one's).
    deployments: tuple[DeploymentConfig, ...] = ()
    strategy: str = "priority"
    fallbacks: tuple[str, ...] = ()
    # None: the gateway's routing.retries.
    retries: int | None = None

    @property
    def targets(self) -> tuple[DeploymentConfig, ...]:
        """Every deployment, the single form as one, upstream models filled in."""
        return self.to_config().targets

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "capabilities": list(self.capabilities),
            "deployments": [dataclasses.asdict(d) for d in self.deployments],
            "fallbacks": list(self.fallbacks),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }

    def to_config(self) -> ModelConfig:
        """As the catalogue takes a model (routing/merge.py merges it over the config's)."""
        return ModelConfig(
            id=self.id,
            provider=self.provider_id,
            # As the config loader has it: with deployments, each names its own.
            upstream_model="" if self.deployments else self.upstream_model,
            context_length=self.context_length,
            input_price_per_1m=self.input_price_per_1m,
            output_price_per_1m=self.output_price_per_1m,
            capabilities=self.capabilities,
            owned_by=self.owned_by,
            deployments=self.deployments,
            strategy=self.strategy,
            fallbacks=self.fallbacks,
            retries=self.retries,
        )

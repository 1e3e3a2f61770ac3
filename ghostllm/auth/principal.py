"""The identity a request runs as, fixed by authentication, read by authorization,
limits, budgets and usage records."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from ghostllm.accounts.permissions import Permissions
from ghostllm.accounts.records import KeyMatch, Role, User
from ghostllm.protocol.usage import NANO_PER_USD


class Via(StrEnum):
    KEY = "api_key"
    TOKEN = "token"
    # GHOSTLLM_ADMIN_KEY.
    MASTER = "master_key"
    # auth.enabled: false.
    NONE = "none"


ALL = Permissions()


def nano_usd(usd: float | None) -> int | None:
    """A budget in USD as exact nano-USD (through its decimal text, so 0.1 is 100,000,000)."""
    return None if usd is None else int(Decimal(repr(usd)) * NANO_PER_USD)


@dataclass(frozen=True, slots=True)
class Budget:
    """A spend limit (nano-USD) and when it starts over (None: never)."""

    limit_nano: int
    period: str | None = None

    @classmethod
    def of(cls, usd: float | None, period: str | None) -> Budget | None:
        nano = nano_usd(usd)
        return None if nano is None else cls(nano, period)


@dataclass(frozen=True, slots=True)
class Principal:
    via: Via
    # The human behind the call (None for a service key, the master key, auth off).
    user_id: str | None
    team_id: str | None
    key_id: str | None
    # None: no role (a service key), so no admin access.
    role: Role | None
    permissions: Permissions
    rate_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel: int | None = None
    # The team's own limits (a key's team, or its user's), for the rate limits.
    team_rate_limit: int | None = None
    team_tpm_limit: int | None = None
    team_max_parallel: int | None = None
    # The budgets of the key, its user and its team (None: that level has none).
    key_budget: Budget | None = None
    user_budget: Budget | None = None
    team_budget: Budget | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def can_read_admin(self) -> bool:
        return self.role in (Role.ADMIN, Role.VIEWER)

    @classmethod
    def of_key(cls, match: KeyMatch) -> Principal:
        key, user, team = match.key, match.user, match.team
        return cls(
            via=Via.KEY,
            user_id=key.user_id,
            team_id=key.team_id or (user.team_id if user else None),
            key_id=key.id,
            role=user.role if user else None,
            permissions=key.permissions,
            rate_limit=key.rate_limit,
            tpm_limit=key.tpm_limit,
            max_parallel=key.max_parallel,
            team_rate_limit=team.rate_limit if team else None,
            team_tpm_limit=team.tpm_limit if team else None,
            team_max_parallel=team.max_parallel if team else None,
            key_budget=Budget.of(key.budget_limit, key.budget_period),
            user_budget=Budget.of(user.budget_limit, user.budget_period) if user else None,
            team_budget=Budget.of(team.budget_limit, team.budget_period) if team else None,
        )

    @classmethod
    def of_user(cls, user: User) -> Principal:
        """A logged-in user: every endpoint and model (keys are how access is narrowed)."""
        return cls(
            Via.TOKEN,
            user.id,
            user.team_id,
            None,
            user.role,
            ALL,
            user_budget=Budget.of(user.budget_limit, user.budget_period),
        )


MASTER = Principal(Via.MASTER, None, None, None, Role.ADMIN, ALL)
UNAUTHENTICATED_ADMIN = Principal(Via.NONE, None, None, None, Role.ADMIN, ALL)

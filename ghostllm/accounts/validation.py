"""Input rules for accounts: every failure is an InvalidRequest naming its field."""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime

from ghostllm.accounts.records import Role
from ghostllm.errors import InvalidRequest

MAX_EMAIL = 254
# No quotes, spaces or control characters: the address is also a CLI argument and a log field.
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*$")
_USERNAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$")
MAX_KEY_NAME = 100
MAX_DESCRIPTION = 500
MAX_INT = 2**31 - 1  # an INTEGER column
MAX_MONEY = 1e12  # NUMERIC(20, 8)
# When a budget resets (migration 0004's CHECK allows exactly these); none: never.
BUDGET_PERIODS = ("daily", "weekly", "monthly")


def _bad(field: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", param=field, code=code)


def email(value: str) -> str:
    """Lower-cased: one account per address whatever its spelling."""
    if not isinstance(value, str) or len(value) > MAX_EMAIL or not _EMAIL.match(value):
        raise _bad("email", "expected an address like name@example.com")
    return value.lower()


def username(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _USERNAME.match(value):
        raise _bad("username", "expected 1 to 64 letters, digits, '.', '_' or '-'")
    return value


def team_name(value: str) -> str:
    if not isinstance(value, str) or not _TEAM_NAME.match(value) or value != value.strip():
        raise _bad("name", "expected 1 to 64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit")
    return value


def text(field: str, value: str, *, max_length: int, required: bool = False) -> str:
    if not isinstance(value, str) or len(value) > max_length or not value.isprintable():
        raise _bad(field, f"expected at most {max_length} printable characters")
    if required and not value.strip():
        raise _bad(field, "must not be empty")
    return value


def role(value: str | Role) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise _bad("role", f"expected one of {', '.join(r.value for r in Role)}") from None


def limit(field: str, value: int | None) -> int | None:
    """A per-minute or concurrency limit: a whole number >= 0 (None: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(field, "expected a whole number", "invalid_type")
    if not 0 <= value <= MAX_INT:
        raise _bad(field, f"expected 0 to {MAX_INT}")
    return value


def money(field: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(field, "expected a number", "invalid_type")
    if not math.isfinite(value) or not 0 <= value < MAX_MONEY:
        raise _bad(field, f"expected a number from 0 to below {MAX_MONEY:.0e}")
    return float(value) or 0.0  # -0.0 as 0.0


def budget_period(value: str | None) -> str | None:
    """None (the budget never resets) or one of BUDGET_PERIODS, in any case, as lower case."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad("budget_period", f"expected one of {', '.join(BUDGET_PERIODS)}", "invalid_type")
    period = value.lower()
    if period not in BUDGET_PERIODS:
        raise _bad("budget_period", f"expected one of {', '.join(BUDGET_PERIODS)}")
    return period


def record_id(field: str, value: str) -> str:
    """Ids are uuid4s; anything else cannot name a record (and never reaches SQL)."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise _bad(field, "expected an id (a UUID)") from None


def is_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def timestamp(field: str, value: str | datetime | None) -> datetime | None:
    """ISO 8601; without an offset it is UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _bad(field, "expected an ISO 8601 date or time, e.g. 2026-12-31T23:59:59Z") from None
    if not isinstance(value, datetime):
        raise _bad(field, "expected an ISO 8601 date or time", "invalid_type")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_PROVIDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PROVIDER_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_URL = 2048
MAX_SECRET = 8192


def provider_id(value: str) -> str:
    if not isinstance(value, str) or not _PROVIDER_ID.match(value):
        raise _bad("provider", "expected 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def provider_type(value: str) -> str:
    if not isinstance(value, str) or not _PROVIDER_TYPE.match(value):
        raise _bad("provider_type", "expected 1 to 32 lower-case letters, digits, '_' or '-'")
    return value


def base_url(value: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) > MAX_URL
        or not value.isprintable()
        or " " in value
        or not value.startswith(("http://", "https://"))
    ):
        raise _bad("base_url", f"expected an http:// or https:// URL of at most {MAX_URL} characters")
    return value


def secret(field: str, value: str) -> str:
    """A credential: never echoed back, so the message says only what is wrong with it."""
    if not isinstance(value, str) or not value:
        raise _bad(field, "must not be empty")
    if len(value) > MAX_SECRET or not value.isprintable() or any(c.isspace() for c in value):
        raise _bad(field, f"expected at most {MAX_SECRET} printable characters without spaces")
    return value

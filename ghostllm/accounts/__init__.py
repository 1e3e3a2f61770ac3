"""Accounts: users, teams and API keys in the store, and the rules for them.

Records (`records`), key permissions (`permissions`), key material (`keys`), password
hashing (`passwords`), input validation (`validation`), the audit trail (`audit`) and
the repository over the store (`repository`). Nothing here is in the request path yet:
the authentication stage will use `AccountRepository.find_key`.
"""

from __future__ import annotations

from ghostllm.accounts.audit import Actor
from ghostllm.accounts.keys import NewKey
from ghostllm.accounts.permissions import Permissions
from ghostllm.accounts.records import ApiKey, KeyMatch, KeyState, Role, Team, User, UserPage
from ghostllm.accounts.repository import AccountRepository

__all__ = [
    "AccountRepository",
    "Actor",
    "ApiKey",
    "KeyMatch",
    "KeyState",
    "NewKey",
    "Permissions",
    "Role",
    "Team",
    "User",
    "UserPage",
]

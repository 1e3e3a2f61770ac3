"""Accounts: users, teams and API keys in the store, and the rules for them.

Records (`records`), key permissions (`permissions`), key material (`keys`), password
hashing (`passwords`), input validation (`validation`), the audit trail (`audit`) and
the repository over the store (`repository`); providers and their API keys, encrypted at
rest (`providers`, `cipher`, `keyring`, `rotation`). Nothing here is in the request path yet:
the authentication stage will use `AccountRepository.find_key`.
"""

from __future__ import annotations

from ghostllm.accounts.audit import Actor
from ghostllm.accounts.cipher import EncryptionKey, SecretCipher, SecretError
from ghostllm.accounts.keys import NewKey
from ghostllm.accounts.permissions import Permissions
from ghostllm.accounts.providers import ProviderRepository
from ghostllm.accounts.records import ApiKey, KeyMatch, KeyState, ProviderRecord, Role, Team, User, UserPage
from ghostllm.accounts.repository import AccountRepository

__all__ = [
    "AccountRepository",
    "Actor",
    "ApiKey",
    "EncryptionKey",
    "KeyMatch",
    "KeyState",
    "NewKey",
    "Permissions",
    "ProviderRecord",
    "ProviderRepository",
    "Role",
    "SecretCipher",
    "SecretError",
    "Team",
    "User",
    "UserPage",
]

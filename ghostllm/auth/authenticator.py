"""From an Authorization header to a Principal, with no store round trip while the
caller's entry is cached (see cache.py).

`Bearer gk-...` is an API key, `Bearer <a.b.c>` a login token, and GHOSTLLM_ADMIN_KEY,
when set, the master admin key. Every failure is the same 401 to the caller, with a
message that says what to fix and never echoes the credential.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from ghostllm.accounts.keys import digest, looks_like_key
from ghostllm.accounts.records import KeyMatch, KeyState, User
from ghostllm.accounts.repository import AccountRepository
from ghostllm.auth.cache import LookupCache, Unavailable
from ghostllm.auth.last_used import LastUsed
from ghostllm.auth.principal import MASTER, UNAUTHENTICATED_ADMIN, Principal
from ghostllm.auth.tokens import TokenError, TokenSigner, looks_like_token
from ghostllm.config import AuthConfig
from ghostllm.errors import AuthenticationFailed, ServiceUnavailable

MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
# Longer than any key or token we issue: not worth looking at.
MAX_CREDENTIAL = 8192
_STATE_MESSAGES = {
    KeyState.REVOKED: "This API key has been revoked.",
    KeyState.EXPIRED: "This API key has expired.",
    KeyState.OWNER_INACTIVE: "The account this API key belongs to is deactivated.",
}


def _invalid(message: str = "Incorrect API key provided.") -> AuthenticationFailed:
    return AuthenticationFailed(message)


@dataclass(frozen=True, slots=True)
class _CachedKey:
    match: KeyMatch
    principal: Principal
    # The key's expiry as Unix time (inf: none), checked on every use.
    expires: float


def bearer(authorization: str) -> str:
    """The credential of `Bearer X` (the scheme in any case); raises the 401 otherwise."""
    if not authorization:
        raise _invalid(MISSING)
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise _invalid("Malformed Authorization header: expected 'Bearer YOUR_KEY'.")
    return credential


class Authenticator:
    def __init__(
        self, repository: AccountRepository, config: AuthConfig, signer: TokenSigner, last_used: LastUsed | None
    ) -> None:
        self.enabled = config.enabled
        self._master = config.admin_key.encode()
        self._repository = repository
        self._signer = signer
        self._last_used = last_used
        self.keys: LookupCache[str, _CachedKey] = LookupCache(
            self._find_key, ttl_s=config.key_cache_ttl_s, timeout_s=config.store_timeout_s
        )
        self.users: LookupCache[str, User] = LookupCache(
            repository.find_user, ttl_s=config.key_cache_ttl_s, timeout_s=config.store_timeout_s
        )

    def set_ttl(self, ttl_s: float) -> None:
        self.keys.ttl_s = self.users.ttl_s = ttl_s

    def clear(self) -> None:
        self.keys.clear()
        self.users.clear()

    async def _find_key(self, key_hash: str) -> _CachedKey | None:
        match = await self._repository.find_key_by_digest(key_hash)
        if match is None:
            return None
        expires = match.key.expires_at.timestamp() if match.key.expires_at is not None else float("inf")
        return _CachedKey(match, Principal.of_key(match), expires)

    async def authenticate(self, authorization: str) -> Principal:
        if not self.enabled:
            return UNAUTHENTICATED_ADMIN
        credential = bearer(authorization)
        if len(credential) > MAX_CREDENTIAL:
            raise _invalid()
        if self._master and hmac.compare_digest(credential.encode(), self._master):
            return MASTER
        try:
            if looks_like_key(credential):
                return await self._by_key(credential)
            if looks_like_token(credential):
                return await self._by_token(credential)
        except Unavailable as exc:
            raise ServiceUnavailable(
                "Your credentials cannot be checked right now (the account store is unreachable); retry shortly.",
                code="auth_unavailable",
                retry_after="1",
            ) from exc
        raise _invalid()

    async def _by_key(self, credential: str) -> Principal:
        cached = await self.keys.get(digest(credential))
        if cached is None:
            raise _invalid()
        state = cached.match.state
        if state is KeyState.ACTIVE and cached.expires <= datetime.now(UTC).timestamp():
            state = KeyState.EXPIRED
        if state is not KeyState.ACTIVE:
            raise _invalid(_STATE_MESSAGES[state])
        if self._last_used is not None:
            self._last_used.touch(cached.match.key.id)
        return cached.principal

    async def _by_token(self, credential: str) -> Principal:
        try:
            claims = self._signer.verify(credential)
        except TokenError:
            raise _invalid("Invalid or expired token: log in again (POST /v1/auth/login).") from None
        user = await self.users.get(claims.user_id)
        if user is None or not user.is_active:
            raise _invalid("The account this token belongs to no longer exists or is deactivated.")
        # The store's role, not the token's: a demotion applies before the token expires.
        return Principal.of_user(user)

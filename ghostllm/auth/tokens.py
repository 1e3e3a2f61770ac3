"""Login tokens: HS256 JWTs (pyjwt) naming the user (`sub`) and their role, with an expiry.

The secret is GHOSTLLM_JWT_SECRET, or on a single machine a generated file in the data
dir (mode 0600): replicas that share a store must share the secret, so set it there.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ghostllm.accounts.records import Role, User

ALGORITHM = "HS256"
ISSUER = "ghostllm"
SECRET_FILE = "jwt-secret"
# HS256 wants a key at least as long as its hash (RFC 7518 3.2).
MIN_SECRET_BYTES = 32


class TokenError(Exception):
    """Not a token of ours, or no longer valid; the message says which, for logs only."""


@dataclass(frozen=True)
class Claims:
    user_id: str
    role: Role
    expires_at: int


def looks_like_token(value: str) -> bool:
    return value.count(".") == 2 and not value.startswith("gk-")


class TokenSigner:
    def __init__(self, secret: str, ttl_s: int) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"GHOSTLLM_JWT_SECRET: expected at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, user: User, *, now: float | None = None) -> str:
        import jwt  # here: pyjwt pulls in cryptography's x509, which worker start-up need not pay

        issued = int(time.time() if now is None else now)
        claims = {"sub": user.id, "role": user.role.value, "iss": ISSUER, "iat": issued, "exp": issued + self.ttl_s}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Claims:
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "role", "exp", "iat"]},
            )
            return Claims(str(claims["sub"]), Role(claims["role"]), int(claims["exp"]))
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise TokenError(str(exc)) from exc


def load_secret(configured: str, data_dir: str) -> str:
    """The configured secret, else the data dir's file, made (mode 0600) by whichever
    process gets there first: written aside, then linked into place, so no process ever
    reads a half-written one."""
    if configured:
        return configured
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        finally:
            aside.unlink()
    return path.read_text().strip()

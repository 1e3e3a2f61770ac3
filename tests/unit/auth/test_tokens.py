"""Login tokens and the Authorization header."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest

from ghostllm.accounts.records import Role, User
from ghostllm.auth.authenticator import bearer
from ghostllm.auth.tokens import TokenError, TokenSigner, load_secret
from ghostllm.errors import AuthenticationFailed

SECRET = "s" * 40
NOW = datetime.now(UTC)
USER = User("4b7c3f0e-0000-4000-8000-000000000001", "a@example.com", None, Role.VIEWER, None, None, 0.0, True,
            False, NOW, NOW)  # fmt: skip


def test_round_trip_carries_user_and_role() -> None:
    signer = TokenSigner(SECRET, 3600)
    claims = signer.verify(signer.issue(USER))
    assert (claims.user_id, claims.role) == (USER.id, Role.VIEWER)


@pytest.mark.parametrize(
    "token",
    [
        TokenSigner(SECRET, 3600).issue(USER, now=0),  # long expired
        TokenSigner("t" * 40, 3600).issue(USER),  # another secret
        jwt.encode({"sub": USER.id, "role": "admin", "iss": "ghostllm", "iat": 0, "exp": 2**40}, "", "none"),
        jwt.encode({"sub": USER.id, "iss": "ghostllm", "iat": 0, "exp": 2**40}, SECRET, "HS256"),  # no role
        jwt.encode({"sub": USER.id, "role": "root", "iss": "ghostllm", "iat": 0, "exp": 2**40}, SECRET, "HS256"),
        "a.b.c",
    ],
    ids=["expired", "other-secret", "alg-none", "no-role", "unknown-role", "garbage"],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(TokenError):
        TokenSigner(SECRET, 3600).verify(token)


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenSigner("short", 3600)


def test_generated_secret_is_private_and_stable(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    first = load_secret("", str(d))
    assert load_secret("", str(d)) == first and len(first) >= 32
    assert (d / "jwt-secret").stat().st_mode & 0o777 == 0o600
    assert load_secret("configured", str(d)) == "configured"


@pytest.mark.parametrize(
    ("header", "credential"),
    [("Bearer gk-abc", "gk-abc"), ("bearer   gk-abc  ", "gk-abc"), ("BEARER x.y.z", "x.y.z")],
)
def test_bearer(header: str, credential: str) -> None:
    assert bearer(header) == credential


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer  ", "Basic abc", "gk-abc", "Token gk-abc"])
def test_bearer_refuses(header: str) -> None:
    with pytest.raises(AuthenticationFailed):
        bearer(header)

"""API key material: `gk-` + 256 random bits, kept only as a SHA-256 digest plus a short
visible prefix that identifies the key in listings."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from ghostllm.accounts.records import ApiKey

KEY_PREFIX = "gk-"
# token_urlsafe(32): 32 random bytes, 43 URL-safe base64 characters.
KEY_BYTES = 32
# What listings show: "gk-" and the first 8 characters (48 of the 256 bits).
VISIBLE_CHARS = 8
_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def digest(key: str) -> str:
    """What the store keeps: the SHA-256 hex digest (a key has 256 bits of entropy, so a
    fast hash is enough; no salt or stretching needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def visible_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + VISIBLE_CHARS]


def looks_like_key(value: str) -> bool:
    """Shape only, so that garbage never reaches the store."""
    body = value[len(KEY_PREFIX) :]
    return value.startswith(KEY_PREFIX) and 43 <= len(body) <= 128 and set(body) <= _URLSAFE


@dataclass(frozen=True)
class NewKey:
    """A key just created: the record, and the clear key, shown this once."""

    key: ApiKey
    secret: str

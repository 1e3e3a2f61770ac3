"""Secrets at rest: AES-256-GCM with a random 96-bit nonce per value.

A stored value is `v1:<key-id>:<base64(nonce + ciphertext + tag)>`. The key id is a
short fingerprint of the key (not the key), so a cipher holding several keys (during
a rotation) knows which one to use; the associated data binds the value to its header
and to what it belongs to (`context`, e.g. `provider:openai`), so a value copied to
another row, or a header edited, does not decrypt. Errors never contain a secret: not
the value, not the key, not the stored token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ghostllm.errors import ConfigError, GhostError

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class SecretError(GhostError):
    """A stored secret cannot be decrypted (wrong key, unknown key id, tampered or
    malformed value). The message names what it belongs to, never the secret."""


@dataclass(frozen=True)
class EncryptionKey:
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ConfigError(f"an encryption key is {KEY_BYTES} bytes, not {len(self.material)}")

    @classmethod
    def generate(cls) -> EncryptionKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_base64(cls, text: str, *, source: str) -> EncryptionKey:
        """`source` names where the text came from (an environment variable, a file) for the error."""
        try:
            material = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                f"{source}: expected base64 of {KEY_BYTES} random bytes (openssl rand -base64 32)"
            ) from None
        if len(material) != KEY_BYTES:
            raise ConfigError(
                f"{source}: expected base64 of {KEY_BYTES} random bytes, got {len(material)} bytes"
                " (openssl rand -base64 32)"
            )
        return cls(material)

    def to_base64(self) -> str:
        return base64.b64encode(self.material).decode("ascii")

    @property
    def id(self) -> str:
        """A public fingerprint: 48 bits of a domain-separated SHA-256, enough to tell keys apart."""
        return hashlib.sha256(b"ghostllm-encryption-key-id\0" + self.material).hexdigest()[:12]


def key_id_of(token: str) -> str | None:
    """The key id a stored value names, or None when it is not in our format."""
    parts = token.split(":", 2)
    return parts[1] if len(parts) == 3 and parts[0] == VERSION and parts[1] else None


class SecretCipher:
    """Encrypts under `primary`; decrypts with `primary` or any of `decrypt_only`."""

    def __init__(self, primary: EncryptionKey, *, decrypt_only: Sequence[EncryptionKey] = ()) -> None:
        self.primary = primary
        self._keys = {k.id: k for k in (*decrypt_only, primary)}

    @property
    def key_id(self) -> str:
        return self.primary.id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def encrypt(self, plaintext: str, context: str) -> str:
        header = f"{VERSION}:{self.primary.id}"
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.primary.material).encrypt(nonce, plaintext.encode("utf-8"), _aad(header, context))
        return f"{header}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, token: str, context: str) -> str:
        parts = token.split(":", 2)
        if len(parts) != 3 or parts[0] != VERSION:
            raise SecretError(f"the stored secret for {context} is not in a format this version knows")
        _, key_id, body = parts
        key = self._keys.get(key_id)
        if key is None:
            raise SecretError(
                f"the stored secret for {context} was encrypted with key id {key_id!r}, which is not configured"
                f" (configured: {', '.join(self._keys)}): wrong GHOSTLLM_ENCRYPTION_KEY or key file?"
            )
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(f"the stored secret for {context} is malformed") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise SecretError(f"the stored secret for {context} is malformed")
        try:
            clear = AESGCM(key.material).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(f"{VERSION}:{key_id}", context)
            )
        except InvalidTag:
            raise SecretError(
                f"the stored secret for {context} does not decrypt with key id {key_id!r}: tampered, or another key"
            ) from None
        return clear.decode("utf-8")


def _aad(header: str, context: str) -> bytes:
    return f"{header}:{context}".encode()

"""Password hashing with bcrypt (cost from `accounts.bcrypt_cost`), off the event loop."""

from __future__ import annotations

import asyncio

import bcrypt

from ghostllm.errors import InvalidRequest

MIN_LENGTH = 8
# bcrypt reads at most 72 bytes (bcrypt 5 refuses longer input instead of truncating).
MAX_BYTES = 72


def check_password(password: str) -> bytes:
    data = password.encode()
    if len(password) < MIN_LENGTH or len(data) > MAX_BYTES:
        raise InvalidRequest(
            f"password: expected {MIN_LENGTH} characters to {MAX_BYTES} bytes", param="password", code="invalid_value"
        )
    return data


def hash_password_sync(password: str, cost: int) -> str:
    return bcrypt.hashpw(check_password(password), bcrypt.gensalt(rounds=cost)).decode()


async def hash_password(password: str, cost: int) -> str:
    data = check_password(password)
    hashed = await asyncio.to_thread(bcrypt.hashpw, data, bcrypt.gensalt(rounds=cost))
    return hashed.decode()


async def verify_password(password: str, hashed: str) -> bool:
    data = password.encode()
    if len(data) > MAX_BYTES or not hashed:
        return False
    return await asyncio.to_thread(bcrypt.checkpw, data, hashed.encode())

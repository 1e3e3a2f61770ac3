"""The authorize stage: what each kind of principal may call."""

from __future__ import annotations

import asyncio

import pytest

from ghostllm.accounts.permissions import Permissions
from ghostllm.accounts.records import Role
from ghostllm.auth.principal import MASTER, Principal, Via
from ghostllm.errors import PermissionDenied
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.exchange import Exchange
from ghostllm.gateway.stages import authorize
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.base import Json

ANY = Permissions()


def principal(role: Role | None, permissions: Permissions = ANY, user: str | None = "u") -> Principal:
    return Principal(Via.KEY, user, None, "k", role, permissions)


def allowed(p: Principal, endpoint: Endpoint, body: Json | None = None) -> bool:
    ex = Exchange((), lambda _ex, _exc: None, RequestContext(), endpoint, lambda: body or {}, False)
    ex.principal = p
    ex.decode()
    try:
        asyncio.run(authorize(ex))
    except PermissionDenied:
        return False
    return True


CHAT_ONLY = Permissions(frozenset({Endpoint.CHAT}), ("m1",))


@pytest.mark.parametrize(
    ("who", "endpoint", "body", "ok"),
    [
        (principal(Role.USER), Endpoint.CHAT, {"model": "any"}, True),
        (principal(Role.USER, CHAT_ONLY), Endpoint.CHAT, {"model": "m1"}, True),
        (principal(Role.USER, CHAT_ONLY), Endpoint.CHAT, {"model": "m2"}, False),
        (principal(Role.USER, CHAT_ONLY), Endpoint.EMBEDDINGS, {"model": "m1"}, False),
        (principal(Role.USER, CHAT_ONLY), Endpoint.MODELS, None, False),
        (principal(Role.USER, Permissions(models=("m1",))), Endpoint.MODELS, {"model": "m2"}, False),
        (principal(Role.USER), Endpoint.ADMIN_READ, None, False),
        (principal(Role.VIEWER), Endpoint.ADMIN_READ, None, True),
        (principal(Role.VIEWER), Endpoint.ADMIN_WRITE, None, False),
        (principal(Role.ADMIN), Endpoint.ADMIN_WRITE, None, True),
        (principal(None, user=None), Endpoint.ADMIN_READ, None, False),  # a service key has no role
        (principal(None, user=None), Endpoint.OWN_KEYS, None, False),
        (principal(Role.USER), Endpoint.OWN_KEYS, None, True),
        (MASTER, Endpoint.ADMIN_WRITE, None, True),
        (MASTER, Endpoint.OWN_KEYS, None, True),
    ],
)
def test_matrix(who: Principal, endpoint: Endpoint, body: Json | None, ok: bool) -> None:
    assert allowed(who, endpoint, body) is ok

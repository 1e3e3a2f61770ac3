"""ghostllm.v1.AuthService: logging in (POST /v1/auth/login) and a caller's own keys
(GET /v1/keys), for any user; the admin API is admin.py."""

from __future__ import annotations

from ghostllm.accounts.repository import AccountRepository
from ghostllm.api import admin_messages as msg
from ghostllm.api.admin_access import admitted
from ghostllm.api.boundary import unary
from ghostllm.auth.login_guard import LoginGuard
from ghostllm.auth.tokens import TokenSigner
from ghostllm.errors import AuthenticationFailed
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.ledger.spend import with_current_spend
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.v1 import admin_pb2, auth_pb2, auth_pb2_grpc

# The same answer whichever of the two was wrong: it must not tell which emails exist.
BAD_LOGIN = "Incorrect email or password."


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, pipeline: Pipeline, accounts: AccountRepository, signer: TokenSigner, guard: LoginGuard) -> None:
        self.pipeline = pipeline
        self.accounts = accounts
        self.signer = signer
        self.guard = guard

    @unary
    async def Login(self, request: auth_pb2.LoginRequest, rc: RequestContext) -> auth_pb2.LoginResponse:
        # Open (no credential): through the pipeline all the same, for its record of the call.
        async with self.pipeline.exchange(rc, Endpoint.LOGIN, dict, stream=False) as ex:
            await ex.admit()
            # Before bcrypt, inside the exchange: a refusal (429) costs no hashing and is recorded.
            attempt = await self.guard.admit(request.email, rc.client_ip)
            try:
                user = await self.accounts.check_login(request.email, request.password)
            except Exception:
                # No verdict on the password (the store failed): no failure to count.
                await self.guard.abandoned(attempt)
                raise
            if user is None:
                raise AuthenticationFailed(BAD_LOGIN)  # counted already, when admitted
            await self.guard.succeeded(attempt)
            return auth_pb2.LoginResponse(
                access_token=self.signer.issue(user), token_type="bearer", expires_in=self.signer.ttl_s
            )

    @unary
    async def ListOwnKeys(self, request: auth_pb2.ListOwnKeysRequest, rc: RequestContext) -> admin_pb2.ListKeysResponse:
        async with admitted(self.pipeline, rc, Endpoint.OWN_KEYS) as p:
            # The master key (and auth off) belongs to no user: it owns no keys.
            keys = [] if p.user_id is None else await self.accounts.list_keys(user=p.user_id)
            keys = await with_current_spend(self.accounts.store, "API key", keys)
            return admin_pb2.ListKeysResponse(keys=[msg.api_key(k) for k in keys])

"""The bench's credential: a real API key (gk-...) made in the bench stack's store
before it starts, so every measured request pays the authentication stage as a
client's would (a cached key lookup), and the auth stage measured on its own."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

KEY_ENV = "GHOSTLLM_BENCH_KEY"


def headers() -> dict[str, str]:
    """What every bench client sends (wrk reads the same variable in post.lua)."""
    return {"authorization": f"Bearer {os.environ.get(KEY_ENV, '')}"}


def provision(config: dict[str, Any]) -> str:
    """A user and key in the stack's store (migrated first), exported for the clients."""
    from ghostllm.store import make_store
    from tests.support.accounts import Accounts, stack_store

    store = stack_store(config)

    async def migrate() -> None:
        async with make_store(store) as s:
            await s.migrate()

    asyncio.run(migrate())
    _, key = Accounts(store).key()
    os.environ[KEY_ENV] = key
    return key


def stage_cost(config: dict[str, Any], key: str, calls: int = 50_000) -> dict[str, float]:
    """Microseconds per call of the authenticate and authorize stages and of the rate limits
    (admit and settle), in this process, on uvloop, for a cached key: what the stages add to
    each request in a worker."""
    import uvloop

    from ghostllm.accounts.repository import AccountRepository
    from ghostllm.auth.authenticator import Authenticator
    from ghostllm.auth.principal import Budget
    from ghostllm.auth.tokens import TokenSigner
    from ghostllm.config import AuthConfig, LimitsConfig
    from ghostllm.gateway.context import RequestContext
    from ghostllm.gateway.exchange import Exchange
    from ghostllm.gateway.stages import Authenticate, Limits, authorize
    from ghostllm.limits.limiter import Limiter
    from ghostllm.limits.memory import MemoryBackend
    from ghostllm.protocol.endpoints import Endpoint
    from ghostllm.store import make_store
    from tests.support.accounts import stack_store

    async def go() -> dict[str, float]:
        async with make_store(stack_store(config)) as store:
            repo = AccountRepository(store)
            authn = Authenticator(repo, AuthConfig(key_cache_ttl_s=5), TokenSigner("b" * 32, 3600), None)
            stage = Authenticate(authn)
            header = f"Bearer {key}"
            body = {"model": "dev-echo", "messages": []}

            def exchange() -> Exchange:
                ex = Exchange((), lambda _e, _x: None, RequestContext(authorization=header), Endpoint.CHAT,
                              lambda: body, False)  # fmt: skip
                ex.decode()
                return ex

            await stage(exchange())  # the one store lookup; the rest are cache hits
            out: dict[str, float] = {}
            for name, fn in (("authenticate", stage), ("authorize", authorize)):
                exchanges = [exchange() for _ in range(calls)]
                for ex in exchanges:
                    ex.principal = (await authn.authenticate(header)) if name == "authorize" else None
                t0 = time.perf_counter()
                for ex in exchanges:
                    await fn(ex)
                out[f"{name}_us"] = (time.perf_counter() - t0) / calls * 1e6
            # The rate limits and a budget (in-process backend; Redis adds its round trip, shared per
            # loop tick): a key with every kind of limit set, admitted and settled as each request would be.
            principal = await authn.authenticate(header)
            limited = dataclasses.replace(
                principal, rate_limit=10**9, tpm_limit=10**12, max_parallel=10**9, key_budget=Budget(10**18)
            )
            rate = Limits(Limiter(LimitsConfig(), MemoryBackend(60_000)))
            exchanges = [exchange() for _ in range(calls)]
            for i, ex in enumerate(exchanges):
                ex.principal, ex.ctx.request_id = limited, str(i)
            t0 = time.perf_counter()
            for ex in exchanges:
                await rate(ex)
                rate.limiter.settle((ex.ctx.request_id, ex.ctx.started_at), 50, 1000)
            out["limits_us"] = (time.perf_counter() - t0) / calls * 1e6
            return out

    return uvloop.run(go())

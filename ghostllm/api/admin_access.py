"""How an admin or account RPC is let in, and who its changes are recorded as.

Every such RPC goes through the pipeline like any endpoint (authenticate, authorize by
the endpoint's rule, a record per call); the roles are checked there, never here. The
body is the typed request, so the pipeline's decode stage gets an empty object: no
model is named, and model resolution skips the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ghostllm.accounts.audit import Actor
from ghostllm.auth.principal import Principal
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.protocol.endpoints import Endpoint

VIA = "admin_api"


@asynccontextmanager
async def admitted(pipeline: Pipeline, rc: RequestContext, endpoint: Endpoint) -> AsyncIterator[Principal]:
    """The caller, once admitted to `endpoint` (one that needs a credential); an error
    raised in the block settles the call with that error."""
    async with pipeline.exchange(rc, endpoint, dict, stream=False) as ex:
        await ex.admit()
        if ex.principal is None:
            raise RuntimeError(f"{endpoint.value} admitted nobody: is it an open endpoint?")
        yield ex.principal


def actor(principal: Principal, rc: RequestContext) -> Actor:
    """The audit trail's who and from where (the client's address as Envoy saw it)."""
    return Actor(user_id=principal.user_id, key_id=principal.key_id, ip_address=rc.client_ip, via=VIA)

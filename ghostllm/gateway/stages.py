"""The admit stages. Each takes the exchange and either fills it in or raises the
error the client gets; the worker lists them in order (see server/worker.py):
authenticate, decode, authorize, resolve the model, limits (rate limits and budgets)."""

from __future__ import annotations

from ghostllm.auth.authenticator import Authenticator
from ghostllm.auth.principal import Principal
from ghostllm.config import AUTO_MODEL, Capability
from ghostllm.errors import PermissionDenied
from ghostllm.gateway.exchange import Exchange
from ghostllm.gateway.pipeline import MAX_FIELD_CHARS, estimate_prompt
from ghostllm.gateway.usage import UsageRecord
from ghostllm.limits.limiter import Limiter
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.base import Json
from ghostllm.routing.auto import Allowed, Auto
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.router import Router


async def decode_body(ex: Exchange) -> None:
    """Parse and validate the body by the endpoint's rules."""
    ex.decode()


class Authenticate:
    """Who is calling (401 when nobody we know); before the body is even parsed."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def __call__(self, ex: Exchange) -> None:
        if ex.endpoint.is_open:
            return
        ex.principal = await self.authenticator.authenticate(ex.ctx.authorization)


def _denied(what: str) -> PermissionDenied:
    return PermissionDenied(f"You are not allowed to {what}.")


def _model_denied(model: str) -> PermissionDenied:
    return PermissionDenied(f"This key is not allowed to use the model '{model[:200]}'.", param="model")


async def authorize(ex: Exchange) -> None:
    """May the principal call this endpoint, with this model? Before the model is
    resolved, so a key learns nothing about models it may not use (403 either way)."""
    p = ex.principal
    endpoint = ex.endpoint
    if endpoint.is_open:
        return
    if p is None:
        raise RuntimeError("authorize runs after authenticate")
    if endpoint is Endpoint.ADMIN_READ:
        if not p.can_read_admin:
            raise _denied("read the admin API (it needs the admin or viewer role)")
    elif endpoint is Endpoint.ADMIN_WRITE:
        if not p.is_admin:
            raise _denied("change anything through the admin API (it needs the admin role)")
    elif endpoint is Endpoint.OWN_KEYS:
        if p.user_id is None and not p.is_admin:
            raise _denied("list keys: this key belongs to no user")
    elif endpoint is Endpoint.OWN_USAGE:
        # Strictly one's own: the master key (and auth off) is nobody's, so it has none.
        if p.user_id is None and p.key_id is None:
            raise _denied("read own usage: this credential belongs to no user or key (use GET /admin/usage)")
    elif not p.permissions.allows(endpoint):
        raise _denied(f"use the {endpoint.value} endpoint with this key")
    elif endpoint.names_model and "model" in (ex.body or {}):
        model = ex.requested_model
        # "auto" names no model: the key's models restrict what it chooses (ResolveModel).
        if model != AUTO_MODEL and not p.permissions.allows_model(model):
            raise _model_denied(model)


def model_filter(p: Principal | None) -> Allowed:
    """The models the caller's key may use, as a test (None: any model, so none is asked about)."""
    if p is None:
        return None
    models = p.permissions.models
    return None if models is None or "*" in models else p.permissions.allows_model


def _needs(ex: Exchange, capability: Capability) -> frozenset[Capability]:
    """What a model chosen for this request must offer: the endpoint's capability, and
    streaming, functions or vision when the request uses them."""
    body = ex.body or {}
    needs = [capability]
    if ex.stream:
        needs.append(Capability.STREAMING)
    if body.get("tools") or body.get("functions"):
        needs.append(Capability.FUNCTIONS)
    if capability is Capability.CHAT and _has_image(body):
        needs.append(Capability.VISION)
    return frozenset(needs)


def _has_image(body: Json) -> bool:
    messages = body.get("messages")
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(isinstance(c, dict) and c.get("type") == "image_url" for c in content):
            return True
    return False


class ResolveModel:
    """The public model in the catalogue, which must offer the endpoint's capability; the
    router (the worker's, or one of its own with the default settings) plans the call.
    "auto" is `auto`'s choice (routing/auto.py; None: routing.auto is off, and "auto" an
    ordinary name)."""

    def __init__(self, catalogue: Catalogue, router: Router | None = None, auto: Auto | None = None) -> None:
        self.catalogue = catalogue
        self.router = router if router is not None else Router(catalogue)
        self.auto = auto

    async def __call__(self, ex: Exchange) -> None:
        if not ex.endpoint.names_model or (ex.endpoint is Endpoint.MODELS and "model" not in (ex.body or {})):
            return  # the listing, or an endpoint without a model
        requested = ex.requested_model
        if requested == AUTO_MODEL:
            self._auto(ex)
            return
        ex.model = self.catalogue.resolve(requested, ex.endpoint.capability)
        ex.deployment = ex.model.deployment
        ex.router = self.router

    def _auto(self, ex: Exchange) -> None:
        allowed = model_filter(ex.principal)
        capability = ex.endpoint.capability
        if self.auto is None:
            # An ordinary name, which authorize let through unchecked.
            if allowed is not None and not allowed(AUTO_MODEL):
                raise _model_denied(AUTO_MODEL)
            ex.model = self.catalogue.resolve(AUTO_MODEL, capability)
        elif capability is None:
            # GetModel: the model service describes "auto"; here only whether this key may see it.
            self.auto.candidates((), allowed, 1)
            return
        else:
            ex.model = self.auto.choose(_needs(ex, capability), allowed)
        ex.deployment = ex.model.deployment
        ex.router = self.router


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class Limits:
    """Requests, tokens and parallel requests per key, user and team, and their budgets
    (ghostllm/limits/): one check, so one round trip to Redis for both. After the model is
    resolved: a request for a model that does not exist costs nothing, and the model's
    max_output_tokens is known for the estimate. Also the settle sink (tokens, slots, spend)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def __call__(self, ex: Exchange) -> None:
        p = ex.principal
        if p is None or ex.endpoint.capability is None:
            return  # only calls that reach a model are limited
        request = (ex.ctx.request_id[:MAX_FIELD_CHARS], ex.ctx.started_at)
        sent = await self.limiter.admit(p, request, lambda: self.estimate(ex))
        if sent:
            ex.ctx.response_headers += sent

    def estimate(self, ex: Exchange) -> int:
        """Tokens reserved at admission: the prompt at 4 characters a token, plus the most the
        answer may take (max_completion_tokens or max_tokens, else the model's default) per choice."""
        body = ex.body or {}
        prompt = estimate_prompt(body)
        if ex.endpoint is Endpoint.EMBEDDINGS:
            return prompt
        most = _int(body.get("max_completion_tokens"))
        if most is None:
            most = _int(body.get("max_tokens"))
        if most is None:
            default = ex.model.config.max_output_tokens if ex.model is not None else 0
            most = default or self.limiter.config.completion_estimate
        return prompt + most * max(_int(body.get("n")) or 1, 1)

    def settle(self, record: UsageRecord) -> None:
        self.limiter.settle((record.request_id, record.started_at), record.total_tokens, record.cost_nano_usd)

"""ghostllm.v1.UsageService: usage and cost from the ledger. GET /admin/usage (admins and
viewers: anyone's, with filters) and GET /v1/usage (the caller's own); both answer the
same report, built by ledger/queries.py from the same SQL the CLI's `ghostllm usage` uses."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from ghostllm.api.admin_access import admitted
from ghostllm.api.admin_messages import optional
from ghostllm.api.boundary import unary
from ghostllm.auth.principal import Principal
from ghostllm.errors import InvalidRequest
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.ledger.queries import Totals, UsageFilter, UsageReport, parse_filter, report, rfc3339
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.store import Store
from ghostllm.v1 import usage_pb2, usage_pb2_grpc

_PARAMS = ("start_date", "end_date", "user_id", "key_id", "team_id", "model", "provider")
# What /v1/usage refuses: its scope is the caller's user (or key), so a user_id could only
# repeat it or empty the report, and a team's usage is not the caller's own.
_NOT_OWN: tuple[Literal["user_id"], Literal["team_id"]] = ("user_id", "team_id")


def _filter(request: usage_pb2.UsageRequest) -> UsageFilter:
    return parse_filter(**{name: optional(request, name) for name in _PARAMS})


def own(f: UsageFilter, p: Principal) -> UsageFilter | None:
    """`f` within what the caller owns: its user's usage (a login token, or a key that has a
    user: a user's key acts for them, as on GET /v1/keys), else its key's (a service key).
    The filters it keeps (dates, key_id, model, provider) only narrow that; None when they
    leave nothing (a service key asking for another key's usage)."""
    if p.user_id is not None:
        return dataclasses.replace(f, user_id=p.user_id)
    if p.key_id is None:
        raise RuntimeError("authorize lets no credential without a user or key read its own usage")
    if f.key_id is not None and f.key_id != p.key_id:
        return None
    return dataclasses.replace(f, key_id=p.key_id)


def _entry(cls: type[Any], name: str, value: str | None, t: Totals) -> Any:
    fields: dict[str, Any] = {
        "requests": t.requests,
        "tokens": t.total_tokens,
        "cost": t.cost_usd,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
    }
    if value is not None:
        fields[name] = value
    return cls(**fields)


def to_proto(r: UsageReport) -> usage_pb2.UsageReport:
    s = r.summary
    return usage_pb2.UsageReport(
        period=usage_pb2.UsagePeriod(start=rfc3339(r.period.start), end=rfc3339(r.period.end)),
        summary=usage_pb2.UsageSummary(
            requests=s.requests,
            tokens=s.total_tokens,
            cost=s.cost_usd,
            unique_users=r.unique_users,
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
        ),
        by_model=[_entry(usage_pb2.ModelUsage, "model", v, t) for v, t in r.by_model],
        by_provider=[_entry(usage_pb2.ProviderUsage, "provider", v, t) for v, t in r.by_provider],
        daily_breakdown=[_entry(usage_pb2.DailyUsage, "date", v, t) for v, t in r.daily],
        by_user=[_entry(usage_pb2.UserUsage, "user_id", v, t) for v, t in r.by_user],
        by_key=[_entry(usage_pb2.KeyUsage, "key_id", v, t) for v, t in r.by_key],
    )


class UsageService(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, pipeline: Pipeline, store: Store) -> None:
        self.pipeline = pipeline
        self.store = store

    @unary
    async def GetUsage(self, request: usage_pb2.UsageRequest, rc: RequestContext) -> usage_pb2.UsageReport:
        async with admitted(self.pipeline, rc, Endpoint.ADMIN_READ):
            return to_proto(await report(self.store, _filter(request)))

    @unary
    async def GetOwnUsage(self, request: usage_pb2.UsageRequest, rc: RequestContext) -> usage_pb2.UsageReport:
        """Strictly the caller's own (see `own`). user_id and team_id are refused with a 400
        rather than ignored: a caller asking for someone else's usage should learn that this
        is not the way (GET /admin/usage is), not get its own report looking like theirs."""
        async with admitted(self.pipeline, rc, Endpoint.OWN_USAGE) as p:
            for name in _NOT_OWN:
                if request.HasField(name):
                    raise InvalidRequest(
                        f"{name}: GET /v1/usage shows only your own usage; filter by {name} on GET /admin/usage",
                        param=name,
                        code="invalid_value",
                    )
            f = _filter(request)
            scoped = own(f, p)
            found = UsageReport(f, Totals(), 0) if scoped is None else await report(self.store, scoped)
            return to_proto(found)

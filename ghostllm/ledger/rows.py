"""A usage record as a usage_logs row."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from ghostllm.gateway.cost import NANO_PER_USD
from ghostllm.gateway.usage import UsageRecord
from ghostllm.store.base import insert_sql

COLUMNS = (
    "id", "request_id", "created_at", "user_id", "api_key_id", "team_id", "endpoint", "model_id", "provider_id",
    "upstream_model", "stream", "status", "error_code", "prompt_tokens", "completion_tokens", "total_tokens",
    "cached_tokens", "reasoning_tokens", "estimated", "cost_nano_usd", "cost", "latency_ms", "ttft_ms",
    "ip_address", "user_agent", "deployment", "attempts", "deployments_tried",
)  # fmt: skip


def stamp(unix: float) -> str:
    """ISO 8601 UTC with milliseconds, as the schema's defaults write it (sortable as text on SQLite)."""
    # What datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" gives
    # (microseconds rounded half to even, as fromtimestamp does, then truncated to milliseconds),
    # at a fraction of its cost: one per request, and the date and time rarely change.
    frac, whole = math.modf(unix)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    elif us < 0:
        whole, us = whole - 1, us + 1_000_000
    second = int(whole)
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= 256:
            _SECONDS.clear()
        prefix = _SECONDS[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    return prefix + _MILLIS[us // 1000]


# The seconds recently stamped ("2026-03-02T12:00:07."), and each millisecond's tail ("042Z").
_SECONDS: dict[int, str] = {}
_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))


def text(value: str) -> str:
    """A client's text as the store can keep it. PostgreSQL refuses NUL in TEXT, and a string
    Python cannot encode as UTF-8 (a lone surrogate) reaches no store: either would fail the
    whole batch it is in, again at every replay. A NUL is valid JSON (`"\\u0000"`), so a model
    name with one is one request away."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            value = value.encode(errors="replace").decode()
    return value


def row(r: UsageRecord) -> tuple[Any, ...]:
    return (
        r.record_id, text(r.request_id), stamp(r.started_at), r.user_id, r.api_key_id, r.team_id, r.endpoint,
        text(r.model), text(r.provider or ""), text(r.upstream_model or ""), r.stream, r.status, r.error_code,
        r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cached_tokens, r.reasoning_tokens, r.estimated,
        r.cost_nano_usd, r.cost_nano_usd / NANO_PER_USD, r.latency_ms, r.ttft_ms, text(r.client_ip),
        text(r.user_agent), r.deployment and text(r.deployment), r.attempts,
        text(",".join(r.deployments_tried)) if r.deployments_tried else None,
    )  # fmt: skip


# A batch goes in with Store.insert_rows, all or nothing: on PostgreSQL a COPY through a
# staging table and one INSERT ... SELECT, elsewhere the INSERT below once per row. The ids
# are the records' own, so a batch written again (after a failure, from the spool) inserts
# nothing twice: a row whose id is there is skipped.
TABLE, CONFLICT = "usage_logs", "id"
# For callers that batch with execute_many themselves (tests seeding usage).
INSERT = insert_sql(TABLE, COLUMNS, CONFLICT)


def current(spooled: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row spooled by an earlier version, which had fewer columns: columns are only ever
    added at the end, nullable, so the missing ones are NULL."""
    missing = len(COLUMNS) - len(spooled)
    return spooled + (None,) * missing if missing > 0 else spooled

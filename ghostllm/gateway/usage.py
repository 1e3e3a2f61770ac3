"""The usage record: what settle hands to every sink, once per request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    # Unix time the request arrived.
    started_at: float
    # chat.completions, completions, embeddings, models, admin.read, ... (Endpoint values).
    endpoint: str
    # The public model id the client asked for (as sent, when it resolved to none; for "auto",
    # the model that served, else the one it chose first); provider and upstream_model are the
    # deployment's that served it (a fallback model's, maybe).
    model: str
    provider: str | None
    upstream_model: str | None
    stream: bool
    # The HTTP status the client got (499: the client went away first), and our error code if any.
    status: int
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int | None
    reasoning_tokens: int | None
    # True when the upstream reported no usage and the counts are ours (what was sent and relayed).
    estimated: bool
    latency_ms: float
    # Streams: time until the first chunk with output was relayed.
    ttft_ms: float | None
    client_ip: str
    user_agent: str
    # The REST body's size as received (0 for typed gRPC calls).
    request_bytes: int
    # Who called (None: not known, e.g. a request refused before authentication finished).
    api_key_id: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    # What it cost, exactly (gateway/cost.py); 0 when no model was resolved.
    cost_nano_usd: int = 0
    # This record's own id, made once: what makes writing it again harmless (the ledger).
    record_id: str = ""
    # Routing: the key ("<provider>/<upstream model>") of the deployment that served the answer
    # (the last one tried when none did; None when no upstream was called), how many attempts
    # were made, and the key of each, in order (a retry on one deployment repeats its key).
    deployment: str | None = None
    attempts: int = 0
    deployments_tried: tuple[str, ...] = ()
    # Time spent in upstream attempts, added up (backoff waits between them excluded); None when
    # no upstream was called. The latency minus this is the gateway's own share.
    upstream_ms: float | None = None
    # W3C trace context (lowercase hex): the trace, and with tracing on our server span (off: the
    # caller's span, from its traceparent); None when the caller sent none and tracing is off.
    trace_id: str | None = None
    span_id: str | None = None

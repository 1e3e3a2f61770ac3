"""What the gateway knows about a call besides its body, built once by the API boundary."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestContext:
    # Envoy's x-request-id (the client's own when it sent one): the id the client got back.
    request_id: str = ""
    client_ip: str = ""
    user_agent: str = ""
    # The raw Authorization value, for the authentication stage.
    authorization: str = ""
    # The transport peer (Envoy, for REST), as gRPC names it.
    peer: str = ""
    # time.monotonic() when the call arrived, and when the caller's deadline passes (None: no deadline).
    started: float = 0.0
    deadline: float | None = None
    # Unix time when the call arrived, for records.
    started_at: float = 0.0
    # Size of the request body as received (REST: the client's JSON; 0 for typed gRPC).
    request_bytes: int = 0
    # Headers for the client's answer (HTTP headers over REST, initial metadata over gRPC),
    # set by stages; the boundary sends them before the first message.
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    # Set to answer a successful REST call with another HTTP status (e.g. /health's 503).
    http_status: int | None = None
    # The caller's W3C trace context, when it sent a valid one (ghostllm/tracing/w3c.py).
    traceparent: str = ""
    tracestate: str = ""
    # Time spent waiting on upstreams so far, added up by the exchange as each stretch of an
    # attempt ends (a stream's clock stops while a batch is relayed, so the first chunk leaves
    # with its own share counted): the boundary reports the rest as the gateway's own overhead.
    upstream_s: float = 0.0

"""GhostLLM development upstream: a fast, deterministic fake of the OpenAI REST API.

DEVELOPMENT AND TESTING ONLY. It answers on loopback so ``make run`` shows a full round trip
without a real provider, serves as the OpenAI adapter's upstream in tests, and is the benchmark's
"fast loopback upstream". Everything it returns is labelled: models are ``owned_by:
"ghostllm-dev"`` and every completion has ``system_fingerprint: "ghostllm-dev"``.

Run it with ``python -m ghostllm.devupstream --port 11435 [--host H] [--chunk-delay-ms MS]``,
or embed ``serve()`` in an event loop.

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``,
``POST /v1/completions``, ``POST /v1/embeddings`` (streaming where OpenAI streams), plus
``GET /_dev/stats`` (request/stream counters and the last request's method, path, lowercased
headers and parsed body) and ``POST /_dev/reset``. Authorization is accepted unchecked.

Failure scenarios, chosen by the request's ``model`` (chat, completions and embeddings):

``error-<status>``
    That status with an OpenAI error body. 400/401/403/404/429/500/503 carry the bodies
    OpenAI really sends (401: ``invalid_api_key``; 429: type ``requests``, code
    ``rate_limit_exceeded`` and header ``retry-after: 7``); other 4xx/5xx get a generic one.
``error-429-after-<s>``
    ``error-429`` with ``retry-after: <s>`` instead of 7.
``slow-<ms>``
    Wait that long, then answer normally (the wait is cancelled if the client leaves).
``hang``
    Never answer; the connection stays open until the client goes away.
``reset``
    Abort the TCP connection (RST, SO_LINGER 0) right after reading the request.
``reset-after-<n>``
    stream=true: the first n events, then (0.2 s later, so the client has read them) a TCP
    reset; stream=false: the head and half the body, then the reset.
``stall-after-<n>``
    stream=true: the first n events, then silence, the connection open until the client goes
    away; stream=false: the head and half the body, then the same silence.
``garbage-sse``
    stream=true: a 200 event stream of ``data: this is not json`` then ``data: [DONE]``;
    stream=false: a 200 ``application/json`` response whose body is not JSON.
``cut-stream``
    stream=true: three normal chunks, then the connection is closed without the final
    HTTP chunk or ``[DONE]``; stream=false: the connection closes mid-body (short read).
``slow-chunks-<ms>``
    stream=true: at least 20 content chunks with that pause between chunks (for disconnect
    and shutdown tests); stream=false: a normal answer.
``wrong-shape``
    A 200 of valid JSON without the types clients rely on: chat ``{"choices":[{"index":"a",
    "message":"oops"}]}`` (streamed: one event with ``"delta":"oops"``, then ``[DONE]``),
    completions the same with ``"text":"oops"``, embeddings ``"data":"oops"``.
``oversized-<MiB>``, ``oversized-chunked-<MiB>``
    A well-formed 200 answer of exactly that many MiB (1 to 1024; the first choice's text or
    the first embedding is padded), with a content-length, or chunked without one; streamed,
    one event that large, then ``[DONE]``. It is written as the client reads it, so a client
    that stops at its limit costs the upstream no memory.
``long-error-<status>``
    That status with an OpenAI error body whose message is about 31 KiB (it starts with
    "Simulated long error" and ends with "(end of the long error)").

Any other model name behaves normally. ``/_dev/stats`` counts a stream as cancelled when its
client disconnected before ``[DONE]`` (``cancelled_requests`` does the same for waiting
non-streaming requests); ``active_streams`` and ``waiting_requests`` are gauges of those in
progress, ``open_connections`` the connections open now (the asking one included).
"""

from ghostllm.devupstream.server import run, serve

__all__ = ["run", "serve"]

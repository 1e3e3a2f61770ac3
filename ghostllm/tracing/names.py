"""Span and attribute names: the OpenTelemetry GenAI semantic conventions (gen_ai.*), the
general ones we use beside them (server.*, http.*, error.type), and ours (ghostllm.*).
Spelled out here rather than imported from the semconv package, whose GenAI names are
still "incubating" and move between its modules."""

from __future__ import annotations

from ghostllm.protocol.endpoints import Endpoint

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"

REQUEST_ID = "ghostllm.request_id"
ENDPOINT = "ghostllm.endpoint"
DEPLOYMENT = "ghostllm.deployment"
ATTEMPTS = "ghostllm.attempts"
ESTIMATED = "ghostllm.usage.estimated"
STAGE = "ghostllm.admit.stage"

ADMIT_SPAN = "admit"
RELAY_SPAN = "relay"
# error.type of an attempt or request the client ended (cancelled, or went away mid-stream).
CANCELLED = "cancelled"

# The GenAI operation of each endpoint that calls a model; the others are named by their Endpoint value.
_OPERATIONS = {Endpoint.CHAT: "chat", Endpoint.COMPLETIONS: "text_completion", Endpoint.EMBEDDINGS: "embeddings"}
# Our provider types as gen_ai.provider.name values (the convention's well-known ones; ollama has none).
_PROVIDERS = {"azure": "azure.ai.openai", "gemini": "gcp.gemini"}


def operation(endpoint: Endpoint) -> tuple[str, bool]:
    """The name a request's spans start with, and whether it is a GenAI operation."""
    op = _OPERATIONS.get(endpoint)
    return (op, True) if op is not None else (endpoint.value, False)


def provider_name(provider_type: str) -> str:
    return _PROVIDERS.get(provider_type, provider_type)

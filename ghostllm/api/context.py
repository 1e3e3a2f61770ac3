"""What a handler learns about the client's request from the metadata Envoy passes along."""

from __future__ import annotations

from ghostllm.api.status import Context
from ghostllm.providers.base import Call


def call_of(context: Context) -> Call:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return Call(request_id=str(value))
    return Call()

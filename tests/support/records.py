"""UsageRecord for tests and benches: a complete, plausible record (a 200 chat completion)
with only the fields a test cares about given."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ghostllm.gateway.usage import UsageRecord


def usage_record(**fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": f"req-{uuid.uuid4().hex[:12]}",
        "started_at": time.time(),
        "endpoint": "chat.completions",
        "model": "m",
        "provider": "p",
        "upstream_model": "m",
        "stream": False,
        "status": 200,
        "error_code": None,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "cached_tokens": None,
        "reasoning_tokens": None,
        "estimated": False,
        "latency_ms": 1.5,
        "ttft_ms": None,
        "client_ip": "127.0.0.1",
        "user_agent": "ua",
        "request_bytes": 10,
        "record_id": uuid.uuid4().hex,
        **fields,
    }
    values.setdefault("total_tokens", values["prompt_tokens"] + values["completion_tokens"])
    return UsageRecord(**values)

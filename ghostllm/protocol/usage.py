"""Token usage as the gateway accounts it, whatever wire format reported it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # None when the upstream did not say (not the same as zero).
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    # Prompt tokens written to the provider's prompt cache (Anthropic bills them apart).
    cache_creation_tokens: int | None = None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_from_openai(d: Any) -> Usage | None:
    """OpenAI's `usage` object (also what every OpenAI-compatible server sends); None if absent or malformed."""
    if not isinstance(d, dict):
        return None
    prompt = _int(d.get("prompt_tokens")) or 0
    completion = _int(d.get("completion_tokens")) or 0
    ptd = d.get("prompt_tokens_details")
    ctd = d.get("completion_tokens_details")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_int(d.get("total_tokens")) or prompt + completion,
        cached_tokens=_int(ptd.get("cached_tokens")) if isinstance(ptd, dict) else None,
        reasoning_tokens=_int(ctd.get("reasoning_tokens")) if isinstance(ctd, dict) else None,
    )

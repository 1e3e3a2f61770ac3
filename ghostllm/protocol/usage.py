"""Token usage as the gateway accounts it, whatever wire format reported it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Money is integer nano-USD wherever it is summed or compared (a float would drift).
NANO_PER_USD = 1_000_000_000


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


def count_or_none(value: Any) -> int | None:
    """A token count as an upstream's JSON gave it: a non-negative integer (a bool is not one), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def count(value: Any) -> int:
    """A token count, 0 where the upstream gave none or a malformed one."""
    return count_or_none(value) or 0


def usage_from_openai(d: Any) -> Usage | None:
    """OpenAI's `usage` object (also what every OpenAI-compatible server sends); None if absent or malformed."""
    if not isinstance(d, dict):
        return None
    prompt = count_or_none(d.get("prompt_tokens")) or 0
    completion = count_or_none(d.get("completion_tokens")) or 0
    ptd = d.get("prompt_tokens_details")
    ctd = d.get("completion_tokens_details")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=count_or_none(d.get("total_tokens")) or prompt + completion,
        cached_tokens=count_or_none(ptd.get("cached_tokens")) if isinstance(ptd, dict) else None,
        reasoning_tokens=count_or_none(ctd.get("reasoning_tokens")) if isinstance(ctd, dict) else None,
    )


def usage_to_openai(u: Usage) -> dict[str, Any]:
    """`u` as OpenAI's `usage` object, what every reply translator puts in the answers it
    writes: the details objects only where the upstream said (None is not zero)."""
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_tokens}
    if u.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out

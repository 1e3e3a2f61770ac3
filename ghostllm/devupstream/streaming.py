"""SSE events for streamed chat and legacy completions, in the order and shape OpenAI sends them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from ghostllm.devupstream.generation import Choice, Generation, pieces
from ghostllm.devupstream.responses import FINGERPRINT, usage

DONE = b"data: [DONE]\n\n"
ARGUMENT_PIECE = 8

Delta = tuple[dict[str, Any], str | None]


def event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _interleave(per_choice: list[list[Any]]) -> Iterator[tuple[int, Any]]:
    """Round-robin over choices by step, as OpenAI does for n > 1."""
    longest = max((len(steps) for steps in per_choice), default=0)
    for step in range(longest):
        for index, steps in enumerate(per_choice):
            if step < len(steps):
                yield index, steps[step]


def _chat_deltas(choice: Choice) -> list[Delta]:
    if not choice.tool_calls:
        return [
            ({"role": "assistant", "content": "", "refusal": None}, None),
            *(({"content": p}, None) for p in pieces(choice.text or "")),
            ({}, choice.finish_reason),
        ]
    deltas: list[Delta] = []
    for i, call in enumerate(choice.tool_calls):
        opening: dict[str, Any] = {
            "tool_calls": [
                {
                    "index": i,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
            ]
        }
        if i == 0:
            # OpenAI folds the role into the first tool-call delta instead of a separate role chunk.
            opening = {"role": "assistant", "content": None, **opening, "refusal": None}
        deltas.append((opening, None))
        args = call.arguments
        for start in range(0, len(args), ARGUMENT_PIECE):
            fragment = args[start : start + ARGUMENT_PIECE]
            deltas.append(({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}, None))
    deltas.append(({}, choice.finish_reason))
    return deltas


def chat_events(gen: Generation, include_usage: bool) -> list[bytes]:
    head: dict[str, Any] = {
        "id": gen.id,
        "object": "chat.completion.chunk",
        "created": gen.created,
        "model": gen.model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    tail: dict[str, Any] = {"usage": None} if include_usage else {}
    events = [
        event(
            {
                **head,
                "choices": [{"index": gen.choices[i].index, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **tail,
            }
        )
        for i, (delta, finish) in _interleave([_chat_deltas(c) for c in gen.choices])
    ]
    ending = (
        [event({**head, "choices": [], "usage": usage(gen.prompt_tokens, gen.completion_tokens)})]
        if include_usage
        else []
    )
    return _ended(events, ending)


def completion_events(gen: Generation, include_usage: bool) -> list[bytes]:
    head: dict[str, Any] = {"id": gen.id, "object": "text_completion", "created": gen.created}
    tail: dict[str, Any] = {"model": gen.model, "system_fingerprint": FINGERPRINT}
    if include_usage:
        tail["usage"] = None
    per_choice: list[list[tuple[str, str | None]]] = [
        [*((p, None) for p in pieces(c.text or "")), ("", c.finish_reason)] for c in gen.choices
    ]
    events = [
        event(
            {
                **head,
                "choices": [{"text": text, "index": gen.choices[i].index, "logprobs": None, "finish_reason": finish}],
                **tail,
            }
        )
        for i, (text, finish) in _interleave(per_choice)
    ]
    ending = (
        [event({**head, **tail, "choices": [], "usage": usage(gen.prompt_tokens, gen.completion_tokens)})]
        if include_usage
        else []
    )
    return _ended(events, ending)


def _ended(events: list[bytes], ending: list[bytes]) -> list[bytes]:
    """A real server sends the usage chunk and [DONE] right after the last generated
    chunk, in one write, not a token interval later (paced streams would otherwise
    be a chunk longer for every client that asks for usage, as the gateway always does)."""
    return [*events[:-1], b"".join([events[-1], *ending, DONE])]

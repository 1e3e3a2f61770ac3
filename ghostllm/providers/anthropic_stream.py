"""Anthropic's Messages event stream as OpenAI chat chunks.

Anthropic numbers content blocks (text, thinking, tool_use) in one sequence; OpenAI
numbers tool calls on their own. A tool_use block gets the next tool-call index when
it starts, and every input_json_delta of that block goes out under it, verbatim (a
stream cut by max_tokens mid-arguments stays cut: nothing is invented). Thinking
blocks are never content. Usage: message_start gives the prompt side,
message_delta the cumulative totals (repeated fields replace, never add).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ghostllm.errors import ProviderError
from ghostllm.protocol.usage import Usage, usage_to_openai
from ghostllm.providers.anthropic_reply import finish_reason, stream_error, usage_of
from ghostllm.providers.base import Json
from ghostllm.providers.openai import stream_object
from ghostllm.providers.sse import SSEFramer
from ghostllm.providers.translator import StreamDecoder

_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class _Tool:
    __slots__ = ("index", "input", "streamed")

    def __init__(self, index: int, start_input: Any) -> None:
        self.index = index
        self.input = start_input
        self.streamed = False


class AnthropicStreamDecoder(StreamDecoder):
    __slots__ = (
        "_blocks",
        "_created",
        "_framer",
        "_id",
        "_model",
        "_provider",
        "_raw_usage",
        "_tools",
        "done",
        "usage",
    )

    def __init__(self, provider: str) -> None:
        self._framer = SSEFramer()
        self._provider = provider
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        # Anthropic block index -> its tool call (text and thinking blocks have none).
        self._blocks: dict[int, _Tool] = {}
        self._tools = 0
        self._raw_usage: dict[str, Any] = {}
        self.usage: Usage | None = None
        self.done = False

    def _chunk(self, delta: Json, finish: str | None = None) -> Json:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _args(self, tool: _Tool, text: str) -> Json:
        return self._chunk({"tool_calls": [{"index": tool.index, "function": {"arguments": text}}]})

    def _take_usage(self, u: Any) -> None:
        if isinstance(u, dict):
            raw = self._raw_usage
            for name in _USAGE_FIELDS:
                if u.get(name) is not None:
                    raw[name] = u[name]
            if isinstance(u.get("output_tokens_details"), dict):
                raw["output_tokens_details"] = u["output_tokens_details"]
            self.usage = usage_of(raw)

    def _tool(self, event: Json) -> _Tool | None:
        index = event.get("index")
        return self._blocks.get(index) if isinstance(index, int) else None

    def _bad(self, payload: bytes) -> ProviderError:
        return ProviderError(f"provider {self._provider} sent an invalid stream event: {payload[:200]!r}")

    def feed(self, data: bytes) -> list[Json]:
        out: list[Json] = []
        for payload in self._framer.feed(data):
            if self.done:
                break
            event = stream_object(self._provider, payload)
            kind = event.get("type")
            if kind == "content_block_delta":
                delta = event.get("delta")
                if not isinstance(delta, dict):
                    raise self._bad(payload)
                dtype = delta.get("type")
                if dtype == "text_delta":
                    text = delta.get("text")
                    if text:
                        out.append(self._chunk({"content": text}))
                elif dtype == "input_json_delta":
                    tool = self._tool(event)
                    part = delta.get("partial_json")
                    if tool is not None and part:
                        tool.streamed = True
                        out.append(self._args(tool, part))
                # thinking_delta, signature_delta, citations_delta: nothing the client sees.
            elif kind == "content_block_start":
                block = event.get("content_block")
                if not isinstance(block, dict) or not isinstance(event.get("index"), int):
                    raise self._bad(payload)
                btype = block.get("type")
                if btype == "text" and block.get("text"):
                    out.append(self._chunk({"content": block["text"]}))
                elif btype == "tool_use":
                    tool = _Tool(self._tools, block.get("input"))
                    self._tools += 1
                    self._blocks[event["index"]] = tool
                    call = {
                        "index": tool.index,
                        "id": block.get("id") or "",
                        "type": "function",
                        "function": {"name": block.get("name") or "", "arguments": ""},
                    }
                    out.append(self._chunk({"tool_calls": [call]}))
            elif kind == "content_block_stop":
                tool = self._tool(event)
                if tool is not None and not tool.streamed:
                    # No input deltas (a call without arguments): its input as the whole
                    # answer gives it, so stream and non-stream agree.
                    tool.streamed = True
                    out.append(self._args(tool, orjson.dumps(tool.input or {}).decode()))
            elif kind == "message_start":
                msg = event.get("message")
                if not isinstance(msg, dict):
                    raise self._bad(payload)
                self._id = msg.get("id") or ""
                self._model = msg.get("model") or ""
                self._take_usage(msg.get("usage"))
                out.append(self._chunk({"role": "assistant", "content": ""}))
            elif kind == "message_delta":
                self._take_usage(event.get("usage"))
                delta = event.get("delta")
                stop = delta.get("stop_reason") if isinstance(delta, dict) else None
                out.append(self._chunk({}, finish_reason(stop)))
            elif kind == "message_stop":
                if self.usage is not None:
                    out.append(
                        {
                            "id": self._id,
                            "object": "chat.completion.chunk",
                            "created": self._created,
                            "model": self._model,
                            "choices": [],
                            "usage": usage_to_openai(self.usage),
                        }
                    )
                self.done = True
            elif kind == "error":
                raise stream_error(self._provider, payload, event)
            # ping, and event types added after this was written, carry nothing for us.
        return out

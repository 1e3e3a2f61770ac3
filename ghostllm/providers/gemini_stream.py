"""Gemini answers as OpenAI chat completions: whole (`generateContent`) and streamed
(`streamGenerateContent?alt=sse`).

Rules both share: text parts are the content and `thought` parts the reasoning (never
content); each `functionCall` part is a tool call with an id we mint (Gemini has none),
carrying the part's `thoughtSignature` when it has one so that the call can go back
upstream as it came (thinking models refuse a call without its signature); STOP with a
call is `tool_calls`, MAX_TOKENS `length`, the safety family `content_filter` (a blocked
prompt too: an empty message, not an error); usage counts thinking tokens inside
completion_tokens.

Streams: Gemini ends a stream by ending the body, with no terminator event, and some
servers put a finishReason on every chunk. So finish reasons are held back and given
once, with the usage chunk, when the body ends (`end()`), and a body that ends without
any finishReason is a broken stream. Every event repeats usage so far: the last wins.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ghostllm.errors import ProviderError
from ghostllm.protocol.usage import Usage, count, usage_to_openai
from ghostllm.providers.base import Json, Reply
from ghostllm.providers.openai import malformed, stream_object, upstream_message
from ghostllm.providers.translator import StreamDecoder

# Between our tool-call id and the thought signature it carries: neither ours nor
# base64 contains it.
SIGNATURE_MARK = "__sig__"
FILTERED = frozenset(
    ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE", "IMAGE_SAFETY",
     "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION")
)  # fmt: skip
# The model broke the function-calling protocol: no answer to give, the reason is the message.
FAILED = frozenset(
    ("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MISSING_THOUGHT_SIGNATURE")
)
MAX_EVENT_BYTES = 64 * 1024 * 1024


def usage_from_gemini(meta: Any) -> Usage | None:
    if not isinstance(meta, dict):
        return None
    # Tokens of tool-use prompts (code execution results) are input like the prompt's.
    prompt = count(meta.get("promptTokenCount")) + count(meta.get("toolUsePromptTokenCount"))
    thoughts = meta.get("thoughtsTokenCount")
    completion = count(meta.get("candidatesTokenCount")) + count(thoughts)
    cached = meta.get("cachedContentTokenCount")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=count(meta.get("totalTokenCount")) or prompt + completion,
        cached_tokens=count(cached) if cached is not None else None,
        reasoning_tokens=count(thoughts) if thoughts is not None else None,
    )


def finish_reason(provider: str, reason: Any, has_calls: bool, candidate: Json) -> str:
    if reason in FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FAILED:
        detail = candidate.get("finishMessage")
        raise ProviderError(f"provider {provider} ended the answer with {reason}" + (f": {detail}" if detail else ""))
    return "tool_calls" if has_calls else "stop"


def tool_call_id(seed: str, choice: int, k: int, signature: Any) -> str:
    base = f"call_{seed}_{choice}_{k}"
    return f"{base}{SIGNATURE_MARK}{signature}" if isinstance(signature, str) and signature else base


def _logprobs(result: Any) -> Json | None:
    """Gemini's logprobsResult as OpenAI's choice.logprobs (bytes unknown: null)."""
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    content = []
    for i, c in enumerate(chosen):
        top = tops[i].get("candidates") or [] if i < len(tops) and isinstance(tops[i], dict) else []
        content.append(
            {
                "token": c.get("token", ""),
                "logprob": c.get("logProbability", 0.0),
                "bytes": None,
                "top_logprobs": [
                    {"token": t.get("token", ""), "logprob": t.get("logProbability", 0.0), "bytes": None} for t in top
                ],
            }
        )
    return {"content": content}


def _parts(provider: str, candidate: Json) -> list[Json]:
    content = candidate.get("content")
    if content is None:
        return []
    parts = content.get("parts") if isinstance(content, dict) else None
    if parts is None:
        return []
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise malformed(provider, "candidate content parts are not a list of objects")
    return parts


def _call(provider: str, part: Json, call_id: str, k: int) -> Json:
    fn = part["functionCall"]
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise malformed(provider, "a functionCall without a name")
    args = fn.get("args")
    return {
        "index": k,
        "id": call_id,
        "type": "function",
        "function": {"name": fn["name"], "arguments": orjson.dumps(args if args is not None else {}).decode()},
    }


def _blocked(data: Json) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _candidates(provider: str, data: Json) -> list[Json]:
    candidates = data.get("candidates")
    if candidates is None:
        return []
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise malformed(provider, "'candidates' is not a list of objects")
    return candidates


def _index(candidate: Json, pos: int) -> int:
    index = candidate.get("index", pos)
    return index if isinstance(index, int) and not isinstance(index, bool) else pos


def _response_id(data: Json, seed: str) -> str:
    rid = data.get("responseId")
    return f"chatcmpl-{rid}" if isinstance(rid, str) and rid else f"chatcmpl-{seed}"


def chat_reply(provider: str, data: Json, seed: str) -> Reply:
    candidates = _candidates(provider, data)
    if not candidates and not _blocked(data):
        raise malformed(provider, "no candidates and no block reason")
    choices = []
    for pos, cand in enumerate(candidates):
        index = _index(cand, pos)
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[Json] = []
        for part in _parts(provider, cand):
            if "functionCall" in part:
                call_id = tool_call_id(seed, index, len(calls), part.get("thoughtSignature"))
                calls.append(_call(provider, part, call_id, len(calls)))
            elif isinstance(part.get("text"), str):
                (thoughts if part.get("thought") else texts).append(part["text"])
        message: Json = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if calls:
            for c in calls:
                del c["index"]
            message["tool_calls"] = calls
        choices.append(
            {
                "index": index,
                "message": message,
                "finish_reason": finish_reason(provider, cand.get("finishReason"), bool(calls), cand),
                "logprobs": _logprobs(cand.get("logprobsResult")),
            }
        )
    if not choices:
        # The prompt itself was blocked: an answer with nothing in it, not an error (policy).
        choices.append(
            {"index": 0, "message": {"role": "assistant", "content": None, "refusal": None},
             "finish_reason": "content_filter", "logprobs": None}
        )  # fmt: skip
    usage = usage_from_gemini(data.get("usageMetadata"))
    out: Json = {
        "id": _response_id(data, seed),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion") or "",
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage_to_openai(usage)
    return Reply(out, usage)


def _payload(event: bytes) -> bytes:
    """An event's data; an error sent after the stream began comes as bare JSON lines."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]
    data = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if data:
        return b"\n".join(data)
    text = event.strip()
    return text if text.startswith(b"{") else b""


class _Choice:
    __slots__ = ("calls", "finish", "started")

    def __init__(self) -> None:
        self.started = False
        self.calls = 0
        self.finish: str | None = None


class GeminiStreamDecoder(StreamDecoder):
    __slots__ = (
        "_blocked", "_choices", "_created", "_id", "_meta", "_model", "_provider", "_rest", "_seed", "done", "usage"
    )  # fmt: skip

    def __init__(self, provider: str, seed: str) -> None:
        self._provider = provider
        self._seed = seed
        self._rest = b""
        self._id = ""
        self._created = 0
        self._model = ""
        self._choices: dict[int, _Choice] = {}
        self._blocked = False
        self._meta: Any = None
        self.usage = None
        self.done = False

    def feed(self, data: bytes) -> list[Json]:
        buf = self._rest + data if self._rest else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        self._rest = events.pop()
        if len(self._rest) > MAX_EVENT_BYTES:
            raise ProviderError(f"upstream stream event larger than {MAX_EVENT_BYTES} bytes")
        out: list[Json] = []
        for event in events:
            payload = _payload(event)
            if payload:
                self._event(payload, out)
        return out

    def end(self) -> list[Json]:
        out: list[Json] = []
        rest, self._rest = self._rest, b""
        # A last event the server did not close with a blank line is still whole.
        payload = _payload(rest.replace(b"\r\n", b"\n"))
        if payload:
            self._event(payload, out)
        if not self._blocked and not any(c.finish for c in self._choices.values()):
            return out
        if not self._choices:
            self._choices[0] = _Choice()
        finals = []
        for index in sorted(self._choices):
            c = self._choices[index]
            if c.finish:
                reason = finish_reason(self._provider, c.finish, c.calls > 0, {})
            else:
                reason = "content_filter" if self._blocked else "stop"
            delta: Json = {} if c.started else {"role": "assistant", "content": None}
            finals.append({"index": index, "delta": delta, "finish_reason": reason, "logprobs": None})
        out.append(self._chunk(finals))
        if self.usage is not None:
            usage_chunk = self._chunk([])
            usage_chunk["usage"] = usage_to_openai(self.usage)
            out.append(usage_chunk)
        self.done = True
        return out

    def _chunk(self, choices: list[Json]) -> Json:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }

    def _event(self, payload: bytes, out: list[Json]) -> None:
        data = stream_object(self._provider, payload)
        if "error" in data:
            raise ProviderError(f"provider {self._provider} failed mid-stream: {upstream_message(payload)}")
        if not self._id:
            self._id = _response_id(data, self._seed)
            self._created = int(time.time())
            self._model = data.get("modelVersion") or ""
        meta = data.get("usageMetadata")
        if meta is not None and meta != self._meta:
            # Most events repeat the last one's usage: converted only when it changed.
            self._meta = meta
            self.usage = usage_from_gemini(meta)
        if _blocked(data):
            self._blocked = True
        choices = []
        for pos, cand in enumerate(_candidates(self._provider, data)):
            index = _index(cand, pos)
            choice = self._choices.get(index)
            if choice is None:
                choice = self._choices[index] = _Choice()
            delta = self._delta(cand, index, choice)
            logprobs = _logprobs(cand.get("logprobsResult"))
            reason = cand.get("finishReason")
            if isinstance(reason, str) and reason:
                if reason in FAILED:
                    finish_reason(self._provider, reason, False, cand)
                # Held back until the body ends (some servers repeat it on every chunk).
                choice.finish = reason
            if delta or logprobs:
                if not choice.started:
                    choice.started = True
                    delta = {"role": "assistant", **delta}
                choices.append({"index": index, "delta": delta, "finish_reason": None, "logprobs": logprobs})
        if choices:
            out.append(self._chunk(choices))

    def _delta(self, cand: Json, index: int, choice: _Choice) -> Json:
        delta: Json = {}
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[Json] = []
        for part in _parts(self._provider, cand):
            if "functionCall" in part:
                call_id = tool_call_id(self._seed, index, choice.calls, part.get("thoughtSignature"))
                calls.append(_call(self._provider, part, call_id, choice.calls))
                choice.calls += 1
            elif isinstance(part.get("text"), str) and part["text"]:
                (thoughts if part.get("thought") else texts).append(part["text"])
        if texts:
            delta["content"] = "".join(texts)
        if thoughts:
            delta["reasoning_content"] = "".join(thoughts)
        if calls:
            delta["tool_calls"] = calls
        return delta

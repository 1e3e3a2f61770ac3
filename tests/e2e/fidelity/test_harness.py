"""The proof's own parts, checked so a green matrix means something: the cases' expectation
language, stream accumulation, the judge, and the replay upstream's framing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fidelity.answer import Answer, accumulate
from tests.fidelity.cases import MISSING, check, holds, resolve
from tests.fidelity.judge import judge
from tests.support.replay import Received, ReplayServer, pieces

DOC = {
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "input": {"a": 1}}]},
    ],
    "systemInstruction": {"parts": [{"text": "be brief"}]},
    "stream": True,
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("messages[1].content[?type==tool_use].id", "toolu_1"),
        ("messages[?role==tool]", MISSING),
        ("system_instruction|systemInstruction.parts[0].text", "be brief"),
        ("messages[5].role", MISSING),
        ("messages[-1].role", "assistant"),
        ("stream.deeper", MISSING),
    ],
)
def test_paths(path: str, value: object) -> None:
    assert resolve(DOC, path) == value


@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        (True, True, True),
        (1, True, False),
        (True, 1, False),
        (1024, 1024, True),
        (MISSING, "absent", True),
        (None, "absent", True),
        (0, "absent", False),
        (MISSING, "present", False),
        (MISSING, {"$in": ["user", "$missing"]}, True),
        (None, {"$in": ["$missing"]}, False),
        (MISSING, {"$ne": False}, True),
        (False, {"$ne": False}, False),
        ("a rate limit hit", {"$contains": "rate limit"}, True),
        ('{"b": 2, "a": 1}', {"$json": {"a": 1, "b": 2}}, True),
        ('{"a": "1"}', {"$json": {"a": 1}}, False),
        ([1, 2], {"$len": 2}, True),
        ("x", {"$type": "string"}, True),
        (True, {"$type": "integer"}, False),
        ([{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}], {"$text": "Hello there"}, True),
        ("Hello there", {"$text": "Hello there"}, True),
        ({"a": 1, "b": 2}, {"a": 1}, False),
        ({"output": "Sunny"}, {"$mentions": "Sunny"}, True),
    ],
)
def test_expectations(actual: object, expected: object, ok: bool) -> None:
    assert holds(actual, expected) is ok


def test_check_reports_each_miss() -> None:
    problems = check(DOC, {"stream": True, "messages": {"$len": 3}, "model": "present"}, "sent")
    assert len(problems) == 2 and "messages" in problems[0] and "model" in problems[1]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_accumulate_merges_tool_calls_and_flags_unstable_ids() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
    chunks: list[dict[str, Any]] = [
        _chunk({"role": "assistant", "tool_calls": [call]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        _chunk({}, "tool_calls"),
        {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 1}},
    ]
    completion, fragments, problems = accumulate(chunks)
    message = completion["choices"][0]["message"]
    assert message["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    assert completion["choices"][0]["finish_reason"] == "tool_calls" and completion["usage"] == {"prompt_tokens": 1}
    assert fragments == {0: 2} and problems == []
    chunks[1] = _chunk({"tool_calls": [{"index": 0, "id": "call_2", "function": {"arguments": ": 1}"}}]})
    assert "id changed" in accumulate(chunks)[2][0]
    assert "no id" in accumulate([_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})])[2][0]


def test_the_judge_catches_a_wrong_answer_and_a_wrong_request() -> None:
    case = {
        "id": "x/y",
        "expected_openai": {"http_status": 200, "assert": {"choices[0].message.content": "right"}},
        "upstream_http_must": {"path": "/v1/messages"},
        "upstream_request_must": {"max_tokens": 5},
    }
    raw = {"id": "a", "object": "chat.completion", "created": 1, "model": "m", "choices": []}
    answer = Answer(200, {}, json.dumps(raw).encode(), completion={"choices": [{"message": {"content": "wrong"}}]})
    sent = Received("POST", "/v1/chat/completions", {}, {"max_tokens": 6}, "")
    problems = judge(case, answer, [sent]).problems
    assert any("content" in p for p in problems)
    assert any("(http) path" in p for p in problems)
    assert any("max_tokens" in p for p in problems)
    assert "sent nothing" in judge(case, answer, []).problems[-1]


def test_pieces_cut_everything_and_lose_nothing() -> None:
    body = b'data: {"a": "\xc3\xa9"}\r\n\r\n' * 50
    parts = pieces(body)
    assert b"".join(parts) == body and len(parts) >= 4 and all(parts)
    assert pieces(b"x") == [b"x"]


def test_replay_serves_the_case_and_answers_listings_apart() -> None:
    sse = b'event: ping\ndata: {"type": "ping"}\n\n' * 20
    with ReplayServer(["claude-test"]) as server, httpx.Client(base_url=server.url) as http:
        server.load(200, {"content-type": "text/event-stream", "connection": "keep-alive"}, sse)
        listing = http.get("/v1/models", headers={"x-api-key": "k"})
        assert listing.json()["data"][0]["id"] == "claude-test"
        tags = http.get("/api/tags").json()
        assert tags["models"][0]["name"] == "claude-test"
        reply = http.post("/v1/messages?beta=true", json={"stream": True}, headers={"X-Api-Key": "k"})
        assert reply.status_code == 200 and reply.content == sse
        assert reply.headers["content-type"] == "text/event-stream"
        again = http.post("/v1/messages", content=b"not json")
        assert again.content == sse
        received = server.received()
        assert [(r.method, r.path) for r in received] == [("POST", "/v1/messages?beta=true"), ("POST", "/v1/messages")]
        assert received[0].body == {"stream": True} and received[0].headers["x-api-key"] == "k"
        assert received[0].http_view()["query"] == {"beta": "true"} and received[1].body is None
        assert [r.path for r in server.listing_requests()] == ["/v1/models", "/api/tags"]
        server.load(429, {"retry-after": "20", "content-type": "application/json"}, b'{"error": {}}')
        limited = http.post("/v1/messages", json={})
        assert limited.status_code == 429 and limited.headers["retry-after"] == "20"
        assert len(server.received()) == 1

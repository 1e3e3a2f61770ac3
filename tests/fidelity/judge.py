"""Judging one replayed case: what the client got against `expected_openai`, and what the
gateway sent upstream against `upstream_http_must` and `upstream_request_must`.

`upstream_request_should` is advice, not a rule: misses are returned apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fidelity.answer import Answer
from tests.fidelity.cases import Case, check, holds, resolve
from tests.support.replay import Received


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def report(self, case: Case) -> str:
        lines = [f"{case['id']}: {case.get('title', '')}", *self.problems]
        return "\n  ".join(lines)


def judge(case: Case, answer: Answer, received: list[Received]) -> Verdict:
    verdict = Verdict()
    verdict.problems += _answer(case, answer)
    verdict.problems += _sent(case, received)
    if received and case.get("upstream_request_should"):
        verdict.advice += check(received[0].body, case["upstream_request_should"], "sent (should)")
    return verdict


def _answer(case: Case, answer: Answer) -> list[str]:
    expected: Mapping[str, Any] = case["expected_openai"]
    problems: list[str] = []
    if not holds(answer.status, expected.get("http_status", 200)):
        problems.append(f"status: expected {expected.get('http_status')}, got {answer.status}: {answer.raw[:500]!r}")
        return problems
    problems += answer.schema_problems()
    problems += answer.problems
    for name, value in (expected.get("headers") or {}).items():
        if answer.headers.get(name.lower()) != value:
            problems.append(f"header {name}: expected {value!r}, got {answer.headers.get(name.lower())!r}")
    if "stream_error" in expected:
        problems += _stream_error(expected["stream_error"], answer)
    if answer.status >= 400:
        problems += check(answer.error, expected.get("assert") or {}, "answer")
        return problems
    if "stream" in expected:
        problems += _stream(expected["stream"], answer)
    problems += check(answer.completion, expected.get("assert") or {}, "answer")
    return problems


def _stream(expected: Mapping[str, Any], answer: Answer) -> list[str]:
    if not answer.streamed:
        return ["stream: expected a stream, got a JSON answer"]
    problems = []
    if "content_type" in expected and not holds(answer.headers.get("content-type", ""), expected["content_type"]):
        problems.append(f"stream content-type: {answer.headers.get('content-type')!r}")
    events = answer.events()
    if expected.get("ends_with_done") and (not events or events[-1] != "[DONE]"):
        problems.append(f"stream does not end with data: [DONE] (last: {events[-1:]!r})")
    chunk_object = expected.get("chunk_object")
    if chunk_object and any(c.get("object") != chunk_object for c in answer.chunks or []):
        problems.append(f"a chunk's object is not {chunk_object}")
    if expected.get("no_error_events") and answer.stream_error is not None:
        problems.append(f"stream carried an error event: {answer.stream_error}")
    return problems


def _stream_error(expected: Mapping[str, Any], answer: Answer) -> list[str]:
    rules = expected.get(f"if_status_{answer.status}")
    if rules is None:
        return []
    if answer.status >= 400:
        return check(answer.error, rules, "error answer")
    problems = []
    if rules.get("error_event") and answer.stream_error is None:
        problems.append("stream: expected an in-band error event, the stream ended without one")
    doc = {"error": answer.stream_error, "finish_reason": resolve(answer.completion, "choices[0].finish_reason")}
    problems += check(doc, {k: v for k, v in rules.items() if k != "error_event"}, "stream")
    return problems


def _sent(case: Case, received: list[Received]) -> list[str]:
    if not received:
        return ["upstream: the gateway sent nothing to the provider"]
    first = received[0]
    problems = check(first.http_view(), case.get("upstream_http_must") or {}, "sent (http)")
    if first.body is None and case.get("upstream_request_must"):
        return [*problems, f"sent: the body is not JSON: {first.text[:300]!r}"]
    return problems + check(first.body, case.get("upstream_request_must") or {}, "sent")

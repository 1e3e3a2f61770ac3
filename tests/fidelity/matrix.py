"""Running the matrix's cells: provider x feature x mode, through Envoy with the openai SDK.

A cell sends its feature's request, judges the answer (tests/fidelity/features.py) and
what the provider received (the emulator's /_emulator/requests, the development
upstream's /_dev/stats). A streaming cell also checks the stream itself (SSE framing,
every chunk against OpenAI's schema, tool-call deltas, the usage chunk) and then sends the
same request unstreamed: the accumulated stream must equal that answer. Usage cells
also find the request's line in the access log (the pipeline's usage record).

A cell is pass, fail, or n-a: the mode does not apply to the feature (not a cell at all),
or the provider really lacks the feature (features.LACKS) and the gateway said so with a
400 naming the feature and the provider.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

from tests.fidelity.answer import Answer
from tests.fidelity.cases import check
from tests.fidelity.environment import DEV_SCENARIOS, KEY_ENV, MatrixEnvironment, Target
from tests.fidelity.features import (
    FEATURES,
    LACKS,
    MORE_ERRORS,
    STREAMING,
    STREAMS_ARGUMENTS,
    Feature,
    View,
    by_key,
    family,
)
from tests.support.replay import http_view

PASS: Final = "pass"
FAIL: Final = "fail"
NA: Final = "n-a"
PROVIDERS: Final = ("openai", "anthropic", "gemini", "ollama", "azure")
# The key start_stack gives every provider (procs.start_stack sets KEY_ENV to it).
UPSTREAM_KEY: Final = "sk-upstream-secret"
assert KEY_ENV == "GHOSTLLM_TEST_UPSTREAM_KEY"


@dataclass
class Result:
    provider: str
    feature: str
    mode: str
    status: str
    problems: list[str] = field(default_factory=list)
    note: str = ""

    def report(self) -> str:
        head = f"{self.provider} / {self.feature} / {self.mode}: {self.status}"
        return "\n  ".join([head + (f" ({self.note})" if self.note else ""), *self.problems])


def cells(providers: tuple[str, ...] = PROVIDERS) -> list[tuple[str, str, str]]:
    """Every (provider, feature, mode) the matrix has: modes a feature does not have are not cells."""
    return [(p, f.key, m) for p in providers for f in FEATURES for m in f.modes]


def run_cell(env: MatrixEnvironment, provider: str, feature_key: str, mode: str) -> Result:
    if provider in env.missing:
        return Result(provider, feature_key, mode, FAIL, [f"no upstream for {provider}: {env.missing[provider]}"])
    cell = _Cell(env, env.targets[provider], by_key(feature_key), mode)
    try:
        cell.run()
    except Exception as exc:  # a broken cell is a failed cell, never a stopped matrix
        cell.problems.append(f"{type(exc).__name__}: {exc}")
    if cell.lacking_ok:
        return Result(provider, feature_key, mode, NA, [], cell.note)
    return Result(provider, feature_key, mode, FAIL if cell.problems else PASS, cell.problems, cell.note)


def view(answer: Answer) -> View:
    if answer.status >= 400 or answer.completion is None:
        return View(answer.status, {}, None, None, answer.error, answer.headers)
    choice = (answer.completion.get("choices") or [{}])[0]
    error = {"error": answer.stream_error} if answer.stream_error is not None else None
    return View(
        answer.status,
        choice.get("message") or {},
        choice.get("finish_reason"),
        answer.completion.get("usage"),
        error,
        answer.headers,
    )


def essence(v: View) -> dict[str, Any]:
    """What must be equal between a stream and the unstreamed answer (ids may differ)."""
    if v.status >= 400:
        err = (v.error or {}).get("error") or {}
        return {"status": v.status, "type": err.get("type"), "code": err.get("code")}
    calls = [(c.get("type"), (c.get("function") or {}).get("name"), v.arguments(i)) for i, c in enumerate(v.calls)]
    usage = v.usage or {}
    return {
        "role": v.message.get("role"),
        "content": v.content or None,
        "tool_calls": calls,
        "finish_reason": v.finish_reason,
        "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
    }


class _Cell:
    def __init__(self, env: MatrixEnvironment, target: Target, feature: Feature, mode: str) -> None:
        self.env, self.target, self.feature, self.mode = env, target, feature, mode
        self.provider = target.provider
        self.contract = self.provider != "openai"
        self.problems: list[str] = []
        self.note = ""
        self.lacking_ok = False

    # -- one request -------------------------------------------------------------------

    def model(self, scenario: str | None) -> str:
        return self.target.scenario_model(scenario) if scenario else self.target.chat_model

    def upstream_model(self, scenario: str | None) -> str:
        if scenario:
            return DEV_SCENARIOS.get(scenario, scenario) if self.provider == "openai" else scenario
        return "dev-echo" if self.provider == "openai" else f"{self.provider}-small"

    def exchange(self, stream: bool, scenario: str | None = None, **extra: Any) -> tuple[Answer, list[dict[str, Any]]]:
        request: dict[str, Any] = {"model": self.model(scenario), **self.feature.request, **extra}
        if stream:
            request.setdefault("stream", True)
            request.setdefault("stream_options", {"include_usage": True})
        self.target.reset()
        answer = self.env.client.send(request)
        return answer, self.target.sent()

    # -- the cell ----------------------------------------------------------------------

    def run(self) -> None:
        stream = self.mode == STREAMING
        scenario = self.feature.scenario
        answer, sent = self.exchange(stream, scenario)
        lacking = LACKS.get((self.provider, self.feature.key))
        if lacking is not None:
            self._lacking(answer, *lacking)
            return
        self.problems += answer.schema_problems()
        self.problems += self.feature.expect(view(answer), self.contract)
        self._sent(sent, stream, scenario)
        if stream and answer.status == 200:
            self._stream(answer)
        getattr(self, f"_more_{self.feature.key}", lambda _a: None)(answer)
        if stream:
            unstreamed, _ = self.exchange(False, scenario)
            ours, theirs = essence(view(answer)), essence(view(unstreamed))
            if ours != theirs:
                self.problems.append(f"the stream accumulated to {ours}, the unstreamed answer is {theirs}")

    def _lacking(self, answer: Answer, keyword: str, reason: str) -> None:
        err = (answer.error or {}).get("error") or {}
        message = str(err.get("message", ""))
        if answer.status == 400 and keyword in message and self.provider in message:
            self.lacking_ok, self.note = True, f"400 as it should: {reason}"
            return
        self.problems.append(
            f"{self.provider} lacks {self.feature.title}: expected a 400 naming {keyword!r} and the provider, "
            f"got {answer.status}: {message or answer.raw[:300]!r}"
        )

    def _stream(self, answer: Answer) -> None:
        content_type = answer.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            self.problems.append(f"stream content-type {content_type!r}")
        events = answer.events()
        if not events or events[-1] != "[DONE]":
            self.problems.append(f"the stream does not end with data: [DONE] (last: {events[-1:]})")
        if answer.stream_error is not None:
            self.problems.append(f"the stream carried an error event: {answer.stream_error}")
        self.problems += answer.problems
        chunks = answer.chunks or []
        with_usage = [i for i, c in enumerate(chunks) if c.get("usage")]
        if with_usage != [len(chunks) - 1] or chunks[-1].get("choices"):
            self.problems.append(
                "include_usage: expected one usage chunk, last, with no choices; "
                f"usage at chunks {with_usage} of {len(chunks)}"
            )
        if any(c.get("choices") and "usage" in c and c["usage"] is not None for c in chunks[:-1]):
            self.problems.append("a content chunk carries usage")

    def _sent(self, sent: list[dict[str, Any]], stream: bool, scenario: str | None) -> None:
        if not sent:
            self.problems.append("the provider received no request")
            return
        if len(sent) > 1:
            self.problems.append(f"the provider received {len(sent)} requests for one call")
        first = sent[0]
        http = http_view(str(first.get("method")), str(first.get("path")), first.get("headers") or {})
        body = first.get("body")
        self.problems += check(http, self._http_must(stream, scenario), f"sent to {self.provider} (http)")
        self.problems += check(body, self._body_must(stream, scenario), f"sent to {self.provider}")
        if scenario is None:
            self.problems += check(body, self.feature.sent.get(family(self.provider), {}), f"sent to {self.provider}")

    def _http_must(self, stream: bool, scenario: str | None) -> dict[str, Any]:
        upstream = self.upstream_model(scenario)
        if self.provider == "anthropic":
            return {
                "method": "POST",
                "path": "/v1/messages",
                "headers.x-api-key": UPSTREAM_KEY,
                "headers.anthropic-version": "present",
            }
        if self.provider == "gemini":
            verb = "streamGenerateContent" if stream else "generateContent"
            return {
                "method": "POST",
                "path": f"/v1beta/models/{upstream}:{verb}",
                "query.alt": "sse" if stream else {"$in": ["$missing", "json"]},
                "headers.x-goog-api-key": UPSTREAM_KEY,
            }
        if self.provider == "ollama":
            return {"method": "POST", "path": "/api/chat"}
        if self.provider == "azure":
            return {
                "method": "POST",
                "path": f"/openai/deployments/{upstream}/chat/completions",
                "query.api-version": "present",
                "headers.api-key": UPSTREAM_KEY,
                "headers.authorization": "absent",
            }
        return {"method": "POST", "path": "/v1/chat/completions", "headers.authorization": f"Bearer {UPSTREAM_KEY}"}

    def _body_must(self, stream: bool, scenario: str | None) -> dict[str, Any]:
        upstream = self.upstream_model(scenario)
        if self.provider == "gemini":
            return {"model": "absent", "stream": "absent", "messages": "absent"}
        if self.provider == "ollama":
            # Ollama streams unless told not to.
            return {"model": upstream, "stream": stream}
        if self.provider == "azure":
            return {"stream": True if stream else {"$in": [False, "$missing"]}}
        return {"model": upstream, "stream": True if stream else {"$in": [False, "$missing"]}}

    # -- feature extras ------------------------------------------------------------------

    def _more_streamed_tool_deltas(self, answer: Answer) -> None:
        fragments = answer.fragments.get(0, 0)
        if self.provider in STREAMS_ARGUMENTS and fragments < 2:
            self.problems.append(f"the arguments came in {fragments} delta(s); the provider streamed them in pieces")
        if fragments < 1:
            self.problems.append("no argument deltas at all")
        first = next(
            (
                c
                for c in answer.chunks or []
                for ch in c.get("choices") or []
                if (ch.get("delta") or {}).get("tool_calls")
            ),
            None,
        )
        if first is not None:
            tc = first["choices"][0]["delta"]["tool_calls"][0]
            if not (tc.get("id") and tc.get("type") == "function" and (tc.get("function") or {}).get("name")):
                self.problems.append(f"the first tool-call delta lacks id, type or name: {tc}")
        texts = [(ch.get("delta") or {}).get("content") for c in answer.chunks or [] for ch in c.get("choices") or []]
        if any(t for t in texts):
            self.problems.append(f"content deltas next to the tool call (arguments as text?): {texts}")

    def _more_usage(self, answer: Answer) -> None:
        self._usage_record(answer, view(answer).usage)

    def _more_usage_stream(self, answer: Answer) -> None:
        self._usage_record(answer, view(answer).usage)
        silent, _ = self.exchange(True, stream_options={"include_usage": False})
        carrying = [c for c in silent.chunks or [] if c.get("usage")]
        if carrying:
            self.problems.append(f"include_usage false: {len(carrying)} chunk(s) still carry usage")
        # Unasked, the client sees no usage; the usage record must still have the upstream's.
        self._usage_record(silent, view(answer).usage)

    def _usage_record(self, answer: Answer, usage: dict[str, Any] | None) -> None:
        rid = answer.headers.get("x-request-id")
        if not rid or not usage:
            self.problems.append(f"cannot find the usage record: request id {rid!r}, usage {usage}")
            return
        line = _access_log_line(self.env, rid)
        if line is None:
            self.problems.append(f"no access-log line for request {rid}")
            return
        got = {k: line.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        want = {k: usage.get(k) for k in got}
        if got != want or line.get("estimated"):
            self.problems.append(f"usage record {got} (estimated: {line.get('estimated')}), the answer said {want}")

    def _more_upstream_error(self, answer: Answer) -> None:
        stream = self.mode == STREAMING
        for scenario, status, etype in MORE_ERRORS:
            more, sent = self.exchange(stream, scenario)
            err = (more.error or {}).get("error") or {}
            if more.status != status or err.get("type") != etype:
                self.problems.append(f"{scenario}: expected {status} {etype}, got {more.status}: {more.error}")
            self._sent(sent, stream, scenario)
        if stream:
            broken, _ = self.exchange(True, "stream-error")
            ended = broken.status >= 500 or broken.stream_error is not None
            if not ended:
                self.problems.append(
                    f"stream-error: a stream the provider broke ended as a normal completion "
                    f"(status {broken.status}, finish {view(broken).finish_reason!r})"
                )


def _access_log_line(env: MatrixEnvironment, request_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """The access log's line for `request_id` (written once per event-loop turn: polled)."""
    needle = f'"request_id":"{request_id}"'.encode()
    deadline = time.monotonic() + timeout
    while True:
        for raw in env.stack.log.read_bytes().splitlines():
            if needle in raw.replace(b'": "', b'":"'):
                try:
                    found: dict[str, Any] = json.loads(raw[raw.index(b"{") :])
                    return found
                except ValueError:
                    continue
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)

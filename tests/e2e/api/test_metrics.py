"""GET /metrics on a real stack of two workers: after a known mix of requests (successes,
refusals, an upstream error, streams, a stream the client abandoned) the counts and token
sums are exactly the usage rows'; a worker killed outright and restarted neither loses nor
repeats what it had counted; Envoy's own stats come with the same scrape.

Workers publish once a second, so every expectation is polled for (with a deadline), never
slept for."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ghostllm.store import make_store
from tests.support.accounts import Accounts, stack_store
from tests.support.http import request
from tests.support.poll import eventually
from tests.support.procs import Stack, stack_config, start_stack, stop

HELLO = [{"role": "user", "content": "Hello there"}]
# What a client may send as a model name: never a label value.
MADE_UP = "client-made-up-model-4f7c"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def stack(upstream_port: int, tmp_path: Path) -> Iterator[Stack]:
    """Its own stack: the counts start at zero."""
    s = start_stack(stack_config(upstream_port, tmp_path, workers=2), upstream_port, tmp_path)
    try:
        yield s
    finally:
        stop(s.proc)


def metrics_text(stack: Stack) -> str:
    reply = request(f"http://127.0.0.1:{stack.config['server']['metrics_port']}/metrics", key=None)
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return reply.body.decode()


def scrape(stack: Stack) -> Samples:
    """Our samples (not Envoy's), by name and labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(metrics_text(stack)):
        for s in family.samples:
            if s.name.startswith("ghostllm_"):
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of `name` that have `labels` (and any others)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def usage_rows(config: dict[str, Any]) -> list[dict[str, Any]]:
    names = ("endpoint", "model", "provider", "status", "error_code", "prompt", "completion", "cached", "reasoning",
             "cost", "stream", "ttft_ms", "attempts", "request_id")  # fmt: skip

    async def go() -> list[dict[str, Any]]:
        async with make_store(stack_store(config)) as store:
            found = await store.fetch_all(f"SELECT {', '.join(_COLUMNS)} FROM usage_logs")
        return [dict(zip(names, r, strict=True)) for r in found]

    return asyncio.run(go())


_COLUMNS = (
    "endpoint", "model_id", "provider_id", "status", "error_code", "prompt_tokens", "completion_tokens",
    "cached_tokens", "reasoning_tokens", "cost_nano_usd", "stream", "ttft_ms", "attempts", "request_id",
)  # fmt: skip


def label_model(row: dict[str, Any]) -> str:
    return "unknown" if row["model"] in ("nope", MADE_UP) else row["model"] or "none"


def expected_requests(rows: list[dict[str, Any]]) -> Counter[tuple[str, str, str, str, str]]:
    return Counter(
        (r["endpoint"], label_model(r), r["provider"] or "none", f"{r['status'] // 100}xx", r["error_code"] or "")
        for r in rows
    )


def scraped_requests(samples: Samples) -> Counter[tuple[str, str, str, str, str]]:
    out: Counter[tuple[str, str, str, str, str]] = Counter()
    for (name, labels), v in samples.items():
        if name == "ghostllm_requests_total" and v:
            d = dict(labels)
            out[(d["endpoint"], d["model"], d["provider"], d["status_class"], d["error_code"])] = int(v)
    return out


def abandon_a_stream(stack: Stack, key: str) -> None:
    """A streaming request whose client goes away after the first event."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.rest_port, timeout=10)
    body = {"model": "slow-chunks-300", "messages": HELLO, "stream": True}
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    assert conn.sock is not None
    conn.sock.close()
    conn.close()


def test_a_known_mix_is_counted_exactly(stack: Stack) -> None:
    config = stack.config
    accounts = Accounts(stack_store(config))
    _, key = accounts.key()
    _, limited = accounts.key(rate_limit=1)
    with openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30) as client:
        for _ in range(4):
            assert client.chat.completions.create(model="dev-echo", messages=HELLO).choices[0].message.content
        for _ in range(2):
            assert list(client.chat.completions.create(model="dev-echo", messages=HELLO, stream=True))
        for model in ("nope", MADE_UP):
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model=model, messages=HELLO)
        with pytest.raises(openai.InternalServerError):  # 502: the upstream's 500, retried once
            client.chat.completions.create(model="error-500", messages=HELLO)
    abandon_a_stream(stack, key)
    bad = request(stack.base_url + "/chat/completions", {"model": "dev-echo", "messages": HELLO}, key="gk-" + "Z" * 43)
    assert bad.status == 401
    # One request a minute, counted per worker (no Redis here): of three, round robin refuses one or more.
    refused = 0
    with openai.OpenAI(base_url=stack.base_url, api_key=limited, max_retries=0, timeout=30) as client:
        for _ in range(3):
            try:
                client.chat.completions.create(model="dev-echo", messages=HELLO)
            except openai.RateLimitError:
                refused += 1
    assert refused >= 1
    sent = 4 + 2 + 2 + 1 + 1 + 1 + 3

    # The rows are the oracle: one per request, the abandoned stream's once its worker noticed.
    def all_rows() -> list[dict[str, Any]] | None:
        found = usage_rows(config)
        return found if len(found) == sent else None

    rows = eventually(all_rows)
    expected = expected_requests(rows)

    def published() -> Samples | None:
        # The ledger's count is read from it at the push after its write: maybe a push later.
        found = scrape(stack)
        done = scraped_requests(found) == expected
        return found if done and total(found, "ghostllm_ledger_rows_total", outcome="written") == sent else None

    samples = eventually(published)
    # What the mix was, in the labels it is counted under.
    assert expected[("chat.completions", "dev-echo", "dev", "2xx", "")] == 6 + 3 - refused
    assert expected[("chat.completions", "unknown", "none", "4xx", "model_not_found")] == 2
    assert expected[("chat.completions", "error-500", "dev", "5xx", "provider_error")] == 1
    assert expected[("chat.completions", "slow-chunks-300", "dev", "4xx", "client_closed")] == 1
    assert expected[("chat.completions", "none", "none", "4xx", "invalid_api_key")] == 1
    assert expected[("chat.completions", "dev-echo", "dev", "4xx", "rate_limit_exceeded")] == refused
    assert MADE_UP not in metrics_text(stack)

    for model, provider in {(label_model(r), r["provider"] or "none") for r in rows}:
        mine = [r for r in rows if (label_model(r), r["provider"] or "none") == (model, provider)]
        for kind, column in (("prompt", "prompt"), ("completion", "completion"), ("cached", "cached"),
                             ("reasoning", "reasoning")):  # fmt: skip
            want = sum(r[column] or 0 for r in mine)
            got = total(samples, "ghostllm_tokens_total", model=model, provider=provider, type=kind)
            assert got == want, (model, provider, kind)
        cost = total(samples, "ghostllm_cost_usd_total", model=model, provider=provider)
        assert cost == pytest.approx(sum(r["cost"] for r in mine) / 1e9)
        h = "ghostllm_request_duration_seconds_count"
        assert total(samples, h, model=model, provider=provider) == len(mine)
        ttft = sum(1 for r in mine if r["ttft_ms"] is not None)
        assert total(samples, "ghostllm_time_to_first_token_seconds_count", model=model, provider=provider) == ttft
        called = sum(1 for r in mine if r["attempts"])
        assert total(samples, "ghostllm_upstream_duration_seconds_count", model=model, provider=provider) == called
    assert total(samples, "ghostllm_tokens_total", model="dev-echo", type="completion") > 0
    upstream_called = len([r for r in rows if r["attempts"]])
    assert total(samples, "ghostllm_gateway_overhead_seconds_count") == upstream_called
    assert total(samples, "ghostllm_retries_total", model="error-500") == 1
    assert total(samples, "ghostllm_ratelimit_rejections_total", limit="requests", level="key") == refused
    assert total(samples, "ghostllm_budget_rejections_total") == 0
    # Every request with a gk- key looked it up once, from the cache or the store.
    keyed = sent
    lookups = total(samples, "ghostllm_auth_cache_hits_total", cache="key")
    lookups += total(samples, "ghostllm_auth_cache_misses_total", cache="key")
    assert lookups == keyed
    assert total(samples, "ghostllm_ledger_rows_total", outcome="written") == sent
    assert total(samples, "ghostllm_active_streams") == 0
    assert total(samples, "ghostllm_provider_up", provider="dev") == 1
    assert total(samples, "ghostllm_circuit_state", deployment="dev/dev-echo") == 0
    # Envoy's own stats, after ours in the same scrape; each of our families appears once.
    assert total(samples, "ghostllm_envoy_up") == 1
    text = metrics_text(stack)
    assert "\nenvoy_cluster_upstream_rq_total{" in text
    ours = [f.name for f in text_string_to_metric_families(text) if f.name.startswith("ghostllm_")]
    assert len(ours) == len(set(ours)) and text.index("# TYPE envoy_") > text.rindex("# TYPE ghostllm_")

    # Counted across both workers: each wrote its own files, and the scrape added them up.
    directory = Path(config["server"]["run_dir"]) / "metrics"
    pids = {str(stack.worker_pid(i)) for i in range(2)}
    assert pids <= {p.stem.split("_")[-1] for p in directory.glob("counter_*.db")}


def test_a_killed_worker_neither_loses_nor_repeats_its_counts(stack: Stack) -> None:
    _, key = Accounts(stack_store(stack.config)).key()
    labels = {"model": "dev-echo", "status_class": "2xx", "error_code": ""}

    def ok(n: int) -> int:
        """`n` answers; the prompt tokens they used."""
        used = 0
        with openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30) as client:
            for _ in range(n):
                answer = client.chat.completions.create(model="dev-echo", messages=HELLO)
                assert answer.usage is not None and answer.choices[0].message.content
                used += answer.usage.prompt_tokens
        return used

    def settled(count: float) -> Samples | None:
        s = scrape(stack)
        return s if total(s, "ghostllm_requests_total", **labels) == count else None

    ok(4)  # round robin: both workers count some
    before = eventually(lambda: settled(4))
    directory = Path(stack.config["server"]["run_dir"]) / "metrics"
    victim = stack.worker_pid(0)
    assert (directory / f"counter_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: not (directory / f"gauge_livesum_{victim}.db").exists())  # its live gauges are gone
    eventually(lambda: _serving_again(stack, victim), within_s=30)

    after = scrape(stack)
    for name in ("ghostllm_requests_total", "ghostllm_tokens_total", "ghostllm_request_duration_seconds_count"):
        assert total(after, name) == total(before, name), name
    assert total(after, "ghostllm_active_streams") == 0

    used = ok(4)
    later = eventually(lambda: settled(8))  # exactly the new ones added
    prompt = "ghostllm_tokens_total"
    assert total(later, prompt, type="prompt") == total(after, prompt, type="prompt") + used
    assert total(later, "ghostllm_requests_total") == total(before, "ghostllm_requests_total") + 4


def _serving_again(stack: Stack, old_pid: int) -> bool:
    try:
        pid = stack.worker_pid(0)
    except AssertionError:
        return False
    ready = Path(stack.config["server"]["run_dir"]) / f"worker-{int(stack.config['server']['worker_base_port'])}.ready"
    try:
        return pid != old_pid and ready.read_text() == str(pid)
    except OSError:
        return False


def test_a_taken_metrics_port_stops_serve_and_says_so(upstream_port: int, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = stack_config(upstream_port, tmp_path, workers=1, metrics_port=busy.getsockname()[1])
        with pytest.raises(RuntimeError, match=r"is server\.metrics_port \d+ taken"):
            started = start_stack(config, upstream_port, tmp_path)
            stop(started.proc)  # only reached when it was not refused: never leave it running

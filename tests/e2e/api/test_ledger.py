"""Every request the gateway answers gets exactly one usage_logs row (successes,
refusals, errors, streams), written off the request path and flushed on SIGTERM."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai

from ghostllm.store import make_store
from tests.support.accounts import Accounts, stack_store
from tests.support.auth import ADMIN_KEY
from tests.support.http import request
from tests.support.procs import stack_config, start_stack, stop

HELLO = [{"role": "user", "content": "Hello there"}]


def usage_rows(config: dict[str, Any]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with make_store(stack_store(config)) as store:
            found = await store.fetch_all(
                "SELECT request_id, endpoint, model_id, status, error_code, api_key_id, user_id, prompt_tokens,"
                " completion_tokens, cost_nano_usd, stream FROM usage_logs"
            )
        names = ("request_id", "endpoint", "model", "status", "error_code", "api_key_id", "user_id", "prompt_tokens",
                 "completion_tokens", "cost_nano_usd", "stream")  # fmt: skip
        return [dict(zip(names, r, strict=True)) for r in found]

    return asyncio.run(go())


def test_one_row_per_request_and_none_lost_on_sigterm(upstream_port: int, tmp_path: Path) -> None:
    config = stack_config(upstream_port, tmp_path)
    config["ledger"] = {"flush_interval_s": 30}  # only the shutdown flush can write them in time
    stack = start_stack(config, upstream_port, tmp_path)
    try:
        accounts = Accounts(stack_store(config))
        user = accounts.user()
        key_id, key = accounts.key(user)
        sent: list[str] = []
        with openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0) as client:
            for _ in range(10):
                raw = client.chat.completions.with_raw_response.create(model="dev-echo", messages=HELLO)
                sent.append(raw.headers["x-request-id"])
                assert raw.parse().choices[0].message.content
            stream = client.chat.completions.with_raw_response.create(model="dev-echo", messages=HELLO, stream=True)
            sent.append(stream.headers["x-request-id"])
            assert list(stream.parse())
        refused = request(stack.base_url + "/models", key="gk-" + "Z" * 43)
        missing = request(stack.base_url + "/chat/completions", {"model": "nope", "messages": HELLO}, key=ADMIN_KEY)
        sent += [refused.headers["x-request-id"], missing.headers["x-request-id"]]
        assert (refused.status, missing.status) == (401, 404)
        time.sleep(0.2)
        assert usage_rows(config) == []  # nothing written yet: the flush interval is 30 s
    finally:
        stop(stack.proc)  # SIGTERM: the workers flush before they exit

    found = {r["request_id"]: r for r in usage_rows(config)}
    assert sorted(found) == sorted(sent)  # exactly one row each
    ok = found[sent[0]]
    assert (ok["endpoint"], ok["model"], ok["status"], ok["api_key_id"], ok["user_id"]) == (
        "chat.completions", "dev-echo", 200, key_id, user,
    )  # fmt: skip
    assert ok["prompt_tokens"] > 0 and ok["completion_tokens"] > 0
    # dev-echo costs 1.5 $/1M in and 2.0 $/1M out: 1500 and 2000 nano-USD a token.
    assert ok["cost_nano_usd"] == ok["prompt_tokens"] * 1500 + ok["completion_tokens"] * 2000
    assert found[sent[10]]["stream"] and found[sent[10]]["completion_tokens"] > 0
    assert (found[sent[11]]["status"], found[sent[11]]["error_code"], found[sent[11]]["api_key_id"]) == (
        401, "invalid_api_key", None,
    )  # fmt: skip
    assert (found[sent[12]]["status"], found[sent[12]]["error_code"]) == (404, "model_not_found")

"""Part 6: what each provider adapter costs the gateway, through its loopback emulator
(ghostllm/emulators/), against the OpenAI pass-through to the dev upstream in the same
run: gateway CPU per non-streaming request and per relayed stream chunk. The adapters are
measured in turn, ROUNDS times, and the medians compared: one 5 s run of one adapter differs
from the next by about as much as the 50 us (per request) or 10 us (per chunk) being measured."""

from __future__ import annotations

import contextlib
import os
import statistics
from pathlib import Path
from typing import Any

from bench import auth
from bench.procs import start_stack
from bench.report import section, table
from bench.streaming import run_streams, stream_body
from bench.wrk import run_wrk
from tests.support.procs import Upstream, emulator, server_config

ADAPTERS = ("anthropic", "gemini", "ollama", "azure")
KEY_ENV = "GHOSTLLM_BENCH_UPSTREAM_KEY"
CONNECTIONS = 8
STREAMS = 8
# Every adapter at the same request rate, below what the slowest emulator can serve: the
# gateway's CPU per request depends on load (a busier loop amortizes its wake-ups), so
# only equal rates compare.
RATE = 300.0
ROUNDS = 3


def _config(tmp: Path, workers: int, fast: Upstream, emulators: dict[str, Upstream]) -> dict[str, Any]:
    caps = ["chat", "streaming", "functions"]
    return {
        "server": server_config(tmp, workers, shutdown_grace_s=3, log_level="WARNING"),
        "providers": [
            {"id": "openai", "type": "openai", "base_url": f"{fast.url}/v1"},
            *({"id": p, "type": p, "base_url": u.url, "api_key_env": KEY_ENV} for p, u in emulators.items()),
        ],
        "models": [
            # start_stack's readiness probe asks for dev-echo.
            {"id": "dev-echo", "provider": "openai", "capabilities": caps},
            {"id": "bench-openai", "provider": "openai", "upstream_model": "dev-echo", "capabilities": caps},
            *(
                {"id": f"bench-{p}", "provider": p, "upstream_model": f"{p}-small", "capabilities": caps}
                for p in emulators
            ),
        ],
    }


def adapters(
    tmp: Path, workers: int, fast: Upstream, duration_s: float, warmup_s: float, rounds: int = ROUNDS
) -> dict[str, Any]:
    tmp = tmp / "adapters"
    tmp.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in (auth.KEY_ENV, "BENCH_BODY", KEY_ENV)}
    os.environ[KEY_ENV] = "bench-upstream-key"
    out: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as stack_of:
            emulators = {p: stack_of.enter_context(emulator(tmp, p)) for p in ADAPTERS}
            config = _config(tmp, workers, fast, emulators)
            auth.provision(config)
            stack = start_stack(config, tmp)
            stack_of.callback(stack.stop)
            names = list(stack.gateway_pids)
            kinds = ("openai", *ADAPTERS)
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            for i in range(rounds):
                for kind in kinds:
                    model = f"bench-{kind}"
                    # The upstream is watched too: it shares the cores, so a costlier one makes the
                    # gateway's own work dearer (a busier machine) without the adapter costing more.
                    watch = {**stack.gateway_pids, "upstream": (fast if kind == "openai" else emulators[kind]).pid}
                    os.environ["BENCH_BODY"] = stream_body(model).decode().replace('"stream": true, ', "")
                    run_wrk(stack.url, threads=1, connections=CONNECTIONS, duration_s=warmup_s, rate=RATE)
                    w = run_wrk(stack.url, threads=1, connections=CONNECTIONS, duration_s=duration_s,
                                watch=watch, rate=RATE)  # fmt: skip
                    s = run_streams(kind, stack.url, model, concurrency=STREAMS, warmup_s=warmup_s,
                                    duration_s=duration_s, watch=watch,
                                    log=tmp / f"stream-{kind}-{i}.log")  # fmt: skip
                    runs[kind].append({
                        "rps": w.rps,
                        "errors": w.error_count,
                        "cpu_per_request_ms": w.cpu_per_request_ms(names),
                        "upstream_cpu_per_request_ms": w.cpu_per_request_ms(["upstream"]),
                        "stream_errors": sum(s.errors.values()),
                        "chunks": s.chunks,
                        "cpu_per_chunk_us": s.cpu_per_chunk_us(names),
                    })  # fmt: skip
            for kind, rs in runs.items():
                out[kind] = {
                    **{
                        k: statistics.median(r[k] for r in rs)
                        for k in ("rps", "cpu_per_request_ms", "cpu_per_chunk_us", "upstream_cpu_per_request_ms")
                    },
                    **{k: sum(r[k] for r in rs) for k in ("errors", "stream_errors", "chunks")},
                    "rounds": rs,
                }
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    base, same = out["openai"], out["azure"]
    rows = [
        [k, r["rps"], r["cpu_per_request_ms"], r["cpu_per_request_ms"] - base["cpu_per_request_ms"],
         r["cpu_per_request_ms"] - same["cpu_per_request_ms"], r["cpu_per_chunk_us"],
         r["cpu_per_chunk_us"] - base["cpu_per_chunk_us"], r["cpu_per_chunk_us"] - same["cpu_per_chunk_us"],
         r["upstream_cpu_per_request_ms"], r["errors"] + r["stream_errors"]]
        for k, r in out.items()
    ]  # fmt: skip
    section(
        table(
            f"6. adapters  (through each provider's emulator; wrk -c{CONNECTIONS} at {RATE:.0f} req/s and "
            f"{STREAMS} SSE clients, {duration_s:.0f}s each, the adapters in turn {rounds}x, medians; "
            "deltas against the OpenAI pass-through to the dev "
            "upstream, and against azure: the OpenAI wire format through an emulator like the others)",
            [
                "adapter",
                "req/s",
                "CPU/req ms",
                "+ms vs openai",
                "+ms vs azure",
                "CPU/chunk us",
                "+us vs openai",
                "+us vs azure",
                "upstream CPU/req ms",
                "errors",
            ],
            rows,
        )
    )
    return out

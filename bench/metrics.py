"""What the metrics cost a request, in a worker: the sink (a usage record added to the
per-worker totals) and the stage and settle that count streams in flight, per request; and
the push of one second's totals into prometheus-client's multiprocess files, amortized over
the requests of that second. For comparison, what updating prometheus-client's objects
directly from the sink would cost (the design this one avoids).

Run in a child process (`python -m bench.metrics`): prometheus-client picks its multiprocess
mode when first imported, from PROMETHEUS_MULTIPROC_DIR, which the child is started with.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import Counter, Histogram

from ghostllm.config import parse_config
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.exchange import Exchange
from ghostllm.gateway.usage import UsageRecord
from ghostllm.metrics.publisher import Publisher
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.factory import make_provider
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.router import Router
from tests.support.records import usage_record

CALLS = 100_000
# Requests per second one worker is assumed to settle when the push is spread over them (a
# worker serves 1-2k non-streaming requests a second on these cores; fewer makes the push
# dearer per request, but then the worker has CPU to spare).
RATE = 1000
# Distinct label sets among them: models x providers x outcomes seen within one second.
MIX = 8


def _records() -> list[UsageRecord]:
    base = usage_record(
        model="gpt-4o",
        provider="openai",
        upstream_model="gpt-4o",
        prompt_tokens=120,
        completion_tokens=300,
        cached_tokens=64,
        latency_ms=812.5,
        client_ip="10.0.0.1",
        user_agent="bench",
        request_bytes=900,
        cost_nano_usd=3_300_000,
        deployment="openai/gpt-4o",
        attempts=1,
        deployments_tried=("openai/gpt-4o",),
        upstream_ms=811.9,
    )
    out: list[UsageRecord] = []
    for i in range(MIX):
        model = ("gpt-4o", "m1", "m2", "m3")[i % 4]
        out.append(
            dataclasses.replace(
                base,
                model=model,
                stream=i % 2 == 1,
                ttft_ms=95.0 if i % 2 else None,
                status=200 if i < MIX - 1 else 502,
                error_code=None if i < MIX - 1 else "provider_error",
                latency_ms=base.latency_ms + i * 37.0,
            )
        )
    return out


def _measure(calls: int) -> dict[str, float]:
    config = parse_config(
        {
            "providers": [{"id": "openai", "type": "openai", "base_url": "http://127.0.0.1:9/v1"}],
            "models": [{"id": m, "provider": "openai"} for m in ("gpt-4o", "m1", "m2", "m3")],
        },
        env={},
    )
    catalogue = Catalogue(config, {p.id: make_provider(p) for p in config.providers})
    # With the router: its deployments' circuits and in-flight counts are read at every push.
    metrics = Publisher(catalogue, router=Router(catalogue))
    records = _records()
    exchanges = []
    for r in records:
        ctx = RequestContext(request_id=r.request_id, started_at=r.started_at)
        exchanges.append(Exchange((), lambda ex, exc: None, ctx, Endpoint.CHAT, dict, r.stream))
    tally, streams, settle = metrics.tally, metrics.streams, metrics.streams.settle
    n = len(records)

    def stage(ex: Exchange) -> None:
        # What the pipeline's await of the stage runs (it never suspends).
        with contextlib.suppress(StopIteration):
            streams(ex).send(None)

    t0 = time.process_time()
    for i in range(calls):
        stage(exchanges[i % n])
        r = records[i % n]
        tally(r)
        settle(r)
    sink_us = (time.process_time() - t0) / calls * 1e6
    metrics.flush()

    # One second's push: RATE requests over the mix, then everything the loop does once a second.
    rounds = 200
    pushed = 0.0
    for _ in range(rounds):
        for i in range(RATE):
            tally(records[i % n])
        t0 = time.process_time()
        metrics.flush()
        pushed += time.process_time() - t0
    flush_ms = pushed / rounds * 1000

    # The alternative: every update straight into the multiprocess files from the sink.
    names = ("endpoint", "model", "provider", "status_class", "error_code")
    requests = Counter("bench_requests_total", "", names, registry=None)
    hists = [Histogram(f"bench_h{i}_seconds", "", ("model", "provider"), registry=None) for i in range(4)]
    tokens = Counter("bench_tokens_total", "", ("model", "provider", "type"), registry=None)
    cost = Counter("bench_cost_total", "", ("model", "provider"), registry=None)
    t0 = time.process_time()
    direct_calls = calls // 5
    for i in range(direct_calls):
        r = records[i % n]
        requests.labels(r.endpoint, r.model, r.provider, "2xx", r.error_code or "").inc()
        for h in hists[: 4 if r.stream else 3]:
            h.labels(r.model, r.provider).observe(r.latency_ms / 1000)
        for kind, v in (("prompt", r.prompt_tokens), ("completion", r.completion_tokens), ("cached", 64)):
            tokens.labels(r.model, r.provider, kind).inc(v)
        cost.labels(r.model, r.provider).inc(r.cost_nano_usd / 1e9)
    direct_us = (time.process_time() - t0) / direct_calls * 1e6
    return {
        "sink_us": sink_us,
        "flush_ms": flush_ms,
        "flush_us_per_request": flush_ms * 1000 / RATE,
        "total_us": sink_us + flush_ms * 1000 / RATE,
        "direct_us": direct_us,
        "rate": RATE,
    }


def metrics_cost(calls: int = CALLS) -> dict[str, float]:
    """The measurement, in a child process with its own multiprocess directory."""
    with tempfile.TemporaryDirectory(prefix="ghostllm-bench-metrics-") as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        out = subprocess.run(
            [sys.executable, "-m", "bench.metrics", "--calls", str(calls)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    found: dict[str, float] = json.loads(out.stdout)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics")
    parser.add_argument("--calls", type=int, default=CALLS)
    args = parser.parse_args(argv)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        parser.error("run through bench.metrics.metrics_cost (PROMETHEUS_MULTIPROC_DIR must be set)")
    print(json.dumps(_measure(args.calls)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

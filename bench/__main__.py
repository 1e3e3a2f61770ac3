"""``python -m bench``: benchmark GhostLLM against its dev upstream and print a report.

A benchmark, not a test: it asserts nothing and exits 0 unless the stack cannot start
(1) or it is interrupted (130). Every process it starts is stopped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import auth, cpu, report
from bench.adapters import adapters
from bench.analytics import analytics
from bench.governance import governance
from bench.large_bodies import large_bodies
from bench.metrics import metrics_cost
from bench.procs import PACED_MODEL, Stack, stack_config, start_stack
from bench.report import ratio, section, table
from bench.routing import routing_cost
from bench.soak import soak
from bench.streaming import StreamResult, run_streams
from bench.tracing import tracing_cost
from bench.wrk import WrkResult, run_wrk
from tests.support.procs import Upstream, dev_upstream

# The paced upstream's pause between chunks: ~50 tokens/s per stream, like a fast hosted model.
CHUNK_DELAY_MS = 20.0
STREAMS = 32
LATENCY_CLIENTS = (1, 16, 64)
# Paced runs: the same clients at a total rate well below one worker's capacity, so the
# added latency shows the gateway's own cost rather than queueing at saturation.
PACED_RATE = 500.0


@dataclass(frozen=True)
class Durations:
    warmup_s: float
    throughput_s: float
    latency_s: float
    stream_warmup_s: float
    stream_s: float


FULL = Durations(warmup_s=2, throughput_s=8, latency_s=5, stream_warmup_s=1, stream_s=8)
QUICK = Durations(warmup_s=1, throughput_s=3, latency_s=2, stream_warmup_s=0.5, stream_s=3)


def _wrk_json(r: WrkResult) -> dict[str, Any]:
    return dataclasses.asdict(r)


# ---------------------------------------------------------------- part 1


def _main_thread_cores(name: str, main_thread_s: dict[str, float], wall_s: float) -> float | None:
    """A Python process's event-loop thread; Envoy's main thread does no proxying, so none for it."""
    if name == "envoy" or name not in main_thread_s or wall_s <= 0:
        return None
    return main_thread_s[name] / wall_s


def throughput(stack: Stack, fast: Upstream, d: Durations) -> dict[str, Any]:
    gw_names = list(stack.gateway_pids)
    gw_watch = {**stack.gateway_pids, "upstream": fast.pid}
    up_watch = {"upstream": fast.pid}
    runs: dict[str, WrkResult] = {}
    for target, url, watch in (("direct", fast.url, up_watch), ("gateway", stack.url, gw_watch)):
        run_wrk(url, threads=2, connections=32, duration_s=d.warmup_s)
        runs[target] = run_wrk(url, threads=2, connections=32, duration_s=d.throughput_s, watch=watch)
    direct, gw = runs["direct"], runs["gateway"]
    rss = cpu.all_rss_mb({**stack.gateway_pids, "upstream": fast.pid})

    rows: list[list[report.Cell]] = [
        [
            "direct",
            direct.rps,
            direct.p50_ms,
            direct.p99_ms,
            direct.error_count,
            direct.cpu_per_request_ms(["upstream"]),
            "upstream",
            direct.machine_busy_pct,
        ],
        [
            "gateway",
            gw.rps,
            gw.p50_ms,
            gw.p99_ms,
            gw.error_count,
            gw.cpu_per_request_ms(gw_names),
            "envoy+workers",
            gw.machine_busy_pct,
        ],
        [
            "ratio gw/direct",
            ratio(gw.rps, direct.rps),
            ratio(gw.p50_ms, direct.p50_ms),
            ratio(gw.p99_ms, direct.p99_ms),
            None,
            None,
            None,
            None,
        ],
    ]
    section(
        table(
            f"1. non-streaming throughput  (wrk -t2 -c32 -d{d.throughput_s:g}s after {d.warmup_s:g}s warm-up, "
            "POST /v1/chat/completions)",
            ["target", "req/s", "p50 ms", "p99 ms", "errors", "CPU/req ms", "of", "machine busy %"],
            rows,
        )
    )
    breakdown: list[list[report.Cell]] = [
        [
            name,
            gw.cpu_per_request_ms([name]),
            gw.cpu_s.get(name, 0.0) / gw.duration_s,
            _main_thread_cores(name, gw.main_thread_s, gw.duration_s),
            rss.get(name, float("nan")),
        ]
        for name in [*gw_names, "upstream"]
    ]
    section(
        table(
            "   gateway run, per process  (upstream shown for context; RSS after the run)",
            ["process", "CPU/req ms", "cores busy", "of which main thread", "RSS MB"],
            breakdown,
        )
    )
    return {
        "direct": _wrk_json(direct),
        "gateway": _wrk_json(gw),
        "direct_upstream_cpu_per_request_ms": direct.cpu_per_request_ms(["upstream"]),
        "gateway_cpu_per_request_ms": gw.cpu_per_request_ms(gw_names),
        "gateway_cpu_per_request_ms_by_process": {n: gw.cpu_per_request_ms([n]) for n in gw_names},
        "upstream_cpu_per_request_ms_in_gateway_run": gw.cpu_per_request_ms(["upstream"]),
        "ratio_rps": ratio(gw.rps, direct.rps),
        "rss_mb": rss,
    }


# ---------------------------------------------------------------- part 2


def latency(stack: Stack, fast: Upstream, d: Durations) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    rows: list[list[report.Cell]] = []
    runs = [(c, None) for c in LATENCY_CLIENTS] + [(c, PACED_RATE) for c in LATENCY_CLIENTS if c > 1]
    for clients, rate in runs:
        threads = 1 if clients == 1 else 2
        direct = run_wrk(fast.url, threads=threads, connections=clients, duration_s=d.latency_s, rate=rate)
        gw = run_wrk(stack.url, threads=threads, connections=clients, duration_s=d.latency_s, rate=rate)
        rows.append(
            [
                f"{clients} @{rate:g}/s" if rate else clients,
                direct.p50_ms,
                gw.p50_ms,
                gw.p50_ms - direct.p50_ms,
                direct.p99_ms,
                gw.p99_ms,
                gw.p99_ms - direct.p99_ms,
                direct.rps,
                gw.rps,
                gw.error_count,
            ]
        )
        out.append(
            {
                "clients": clients,
                "paced_rate": rate,
                "threads": threads,
                "direct": _wrk_json(direct),
                "gateway": _wrk_json(gw),
                "added_p50_ms": gw.p50_ms - direct.p50_ms,
                "added_p99_ms": gw.p99_ms - direct.p99_ms,
            }
        )
    section(
        table(
            f"2. added latency  (wrk, {d.latency_s:g}s per run; -t1 for 1 client, -t2 otherwise; "
            f"'@{PACED_RATE:g}/s' rows pace the clients to that total rate)",
            [
                "clients",
                "direct p50",
                "gw p50",
                "added p50",
                "direct p99",
                "gw p99",
                "added p99",
                "direct req/s",
                "gw req/s",
                "gw errors",
            ],
            rows,
        )
    )
    print("   (latencies in ms)")
    return out


# ---------------------------------------------------------------- part 3


def streaming(stack: Stack, paced: Upstream, d: Durations, tmp: Path) -> dict[str, Any]:
    gw_names = list(stack.gateway_pids)

    def go(target: str, url: str, model: str, watch: dict[str, int]) -> StreamResult:
        return run_streams(
            target,
            url,
            model,
            concurrency=STREAMS,
            warmup_s=d.stream_warmup_s,
            duration_s=d.stream_s,
            watch=watch,
            log=tmp / f"stream-{target}.log",
        )

    direct = go("direct", paced.url, "dev-echo", {"upstream": paced.pid})
    gw = go("gateway", stack.url, PACED_MODEL, {**stack.gateway_pids, "upstream": paced.pid})

    def row(r: StreamResult, cpu_names: list[str], who: str) -> list[report.Cell]:
        errors = sum(r.errors.values())
        return [
            r.target,
            r.streams,
            r.chunks,
            r.chunks / r.window_s,
            r.ttft_p50_ms,
            r.ttft_p99_ms,
            r.stream_p50_ms,
            errors,
            r.cpu_per_chunk_us(cpu_names),
            who,
            r.client_cpu_s / r.window_s,
        ]

    rows = [
        row(direct, ["upstream"], "upstream"),
        row(gw, gw_names, "envoy+workers"),
        [
            "added (gw - direct)",
            None,
            None,
            None,
            gw.ttft_p50_ms - direct.ttft_p50_ms,
            gw.ttft_p99_ms - direct.ttft_p99_ms,
            gw.stream_p50_ms - direct.stream_p50_ms,
            None,
            None,
            None,
            None,
        ],
    ]
    section(
        table(
            f"3. streaming  ({STREAMS} concurrent SSE clients in their own process, starts spread over the "
            f"{d.stream_warmup_s:g}s warm-up, {d.stream_s:g}s window; "
            f"upstream paced {CHUNK_DELAY_MS:g} ms/chunk)",
            [
                "target",
                "streams",
                "chunks",
                "chunks/s",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "stream p50 ms",
                "errors",
                "CPU/chunk us",
                "of",
                "client cores",
            ],
            rows,
        )
    )
    breakdown: list[list[report.Cell]] = [
        [
            name,
            gw.cpu_per_chunk_us([name]),
            gw.cpu_s.get(name, 0.0) / gw.window_s,
            _main_thread_cores(name, gw.main_thread_s, gw.window_s),
        ]
        for name in [*gw_names, "upstream"]
    ]
    section(
        table(
            "   gateway run, per process",
            ["process", "CPU/chunk us", "cores busy", "of which main thread"],
            breakdown,
        )
    )
    for r in (direct, gw):
        if r.errors:
            print(f"   {r.target} errors: {r.errors}")
    return {
        "chunk_delay_ms": CHUNK_DELAY_MS,
        "direct": dataclasses.asdict(direct),
        "gateway": dataclasses.asdict(gw),
        "added_ttft_p50_ms": gw.ttft_p50_ms - direct.ttft_p50_ms,
        "added_ttft_p99_ms": gw.ttft_p99_ms - direct.ttft_p99_ms,
        "gateway_cpu_per_chunk_us": gw.cpu_per_chunk_us(gw_names),
        "gateway_cpu_per_chunk_us_by_process": {n: gw.cpu_per_chunk_us([n]) for n in gw_names},
        "direct_upstream_cpu_per_chunk_us": direct.cpu_per_chunk_us(["upstream"]),
    }


# ---------------------------------------------------------------- main


def summary(results: dict[str, Any], cores: int) -> str:
    items: list[tuple[str, str, str]] = []
    tp = results.get("throughput")
    if tp:
        items.append(
            ("gateway CPU per non-streaming request", f"{tp['gateway_cpu_per_request_ms']:.2f} ms", "<= 0.3 ms")
        )
    st = results.get("streaming")
    if st:
        items.append(("gateway CPU per relayed stream chunk", f"{st['gateway_cpu_per_chunk_us']:.0f} us", "<= 50 us"))
        items.append((f"added TTFT at {STREAMS} streams", f"{st['added_ttft_p50_ms']:.1f} ms", "<= 2 ms"))
    au = results.get("auth")
    if au:
        items.append(
            ("auth stages per request (cached key)", f"{au['authenticate_us'] + au['authorize_us']:.1f} us", "")
        )
        items.append(("rate limits per request (in-process)", f"{au['limits_us']:.1f} us", ""))
    rc = results.get("routing")
    if rc:
        items.append(("routing per request (2 weighted deployments)", f"{rc['routing_us']:.1f} us", "<= 20 us"))
    mc = results.get("metrics")
    if mc:
        items.append(("metrics per request (sink + its share of the 1 s push)", f"{mc['total_us']:.1f} us", "<= 20 us"))
    ad = results.get("adapters")
    if ad:
        # Azure is the OpenAI format through an emulator like the others: the fair baseline.
        base = ad["azure"]
        native = [k for k in ad if k not in ("openai", "azure")]
        worst = max(native, key=lambda k: ad[k]["cpu_per_request_ms"], default=None)
        if worst is not None:
            extra_req = (ad[worst]["cpu_per_request_ms"] - base["cpu_per_request_ms"]) * 1000
            items.append((f"adapter overhead per request vs azure (worst: {worst})", f"{extra_req:.0f} us", "<= 50 us"))
        worst_c = max(native, key=lambda k: ad[k]["cpu_per_chunk_us"], default=None)
        if worst_c is not None:
            extra_c = ad[worst_c]["cpu_per_chunk_us"] - base["cpu_per_chunk_us"]
            items.append((f"adapter overhead per chunk vs azure (worst: {worst_c})", f"{extra_c:.1f} us", "<= 10 us"))
    gv = results.get("governance")
    if gv:
        items.append(
            (
                "governance CPU per request over the spine",
                f"{gv['added_cpu_per_request_ms'] * 1000:.0f} us",
                "<= 100 us",
            )
        )
        items.append(("governance throughput vs the spine", f"{gv['throughput_ratio']:.2f}", ">= 0.90"))
    an = results.get("analytics")
    if an:
        q = an["query"]
        items.append(
            (
                f"usage report, {an['rows'] / 1e6:g}M rows, 30 days (no filter; slowest filter)",
                f"{q['none']['median_ms']:.0f} ms; {max(v['median_ms'] for v in q.values()):.0f} ms",
                "<= 500 ms",
            )
        )
    su = results.get("startup")
    if su:
        items.append(("startup to first answer", f"{su['first_answer_s']:.1f} s", "<= 1.5 s"))
    if tp:
        gw_rps = tp["gateway"]["rps"]
        items.append(("throughput", f"{gw_rps:,.0f} req/s (ratio {tp['ratio_rps']:.2f} of direct)", ""))
    return report.summary_block(cores, items)


def run(args: argparse.Namespace) -> int:
    d = QUICK if args.quick else FULL
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {
        "meta": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cores": cores,
            "quick": args.quick,
            "durations": dataclasses.asdict(d),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "workers_option": args.workers,
        }
    }
    tmp = Path(tempfile.mkdtemp(prefix="ghostllm-bench-"))
    ok = False
    try:
        with contextlib.ExitStack() as stack_of:
            fast = stack_of.enter_context(dev_upstream(tmp))
            paced = stack_of.enter_context(dev_upstream(tmp, chunk_delay_ms=CHUNK_DELAY_MS))
            config = stack_config(fast.port, paced.port, tmp, args.workers)
            key = auth.provision(config)
            try:
                stack = start_stack(config, tmp)
            except (RuntimeError, TimeoutError) as exc:
                print(f"bench: the GhostLLM stack did not start: {exc}", file=sys.stderr)
                print(f"bench: logs kept in {tmp}", file=sys.stderr)
                return 1
            stack_of.callback(stack.stop)
            workers = len(stack.worker_pids)
            results["meta"]["workers"] = workers
            results["startup"] = {"first_answer_s": stack.first_answer_s, "ready_line_s": stack.ready_line_s}
            print(
                f"GhostLLM bench: {cores} cores, {workers} worker(s), envoy pid {stack.envoy_pid}, "
                f"{'quick' if args.quick else 'full'} run; work dir {tmp} (kept only if something fails)"
            )
            section(
                table(
                    "4. startup  (spawn `ghostllm serve` -> first 200 chat completion through Envoy, 5 ms polling)",
                    ["measure", "seconds"],
                    [["first answer", stack.first_answer_s], ["'GhostLLM ready' printed", stack.ready_line_s]],
                )
            )
            results["auth"] = cost = auth.stage_cost(config, key)
            section(
                table(
                    "4b. auth stages  (in-process, uvloop, a cached gk- key; every request above pays them)",
                    ["stage", "us per request"],
                    [
                        ["authenticate", cost["authenticate_us"]],
                        ["authorize", cost["authorize_us"]],
                        ["rate limits and a budget (in-process; admit + settle)", cost["limits_us"]],
                    ],
                )
            )
            results["routing"] = rc = routing_cost()
            section(
                table(
                    "4c. routing  (in-process, per request: the plan for a model of two weighted deployments and "
                    'the attempt\'s bookkeeping; `model: "auto"` choosing among 11 models)',
                    ["stage", "us per request"],
                    [["routing (2 weighted deployments)", rc["routing_us"]], ['model "auto" (choice)', rc["auto_us"]]],
                )
            )
            results["metrics"] = mc = metrics_cost()
            section(
                table(
                    "4d. metrics  (in-process, prometheus-client in multiprocess mode: the sink and the streams "
                    f"stage per request; the push of one second's totals at {mc['rate']:.0f} req/s over 8 label "
                    "sets, spread over them; and, for comparison, updating prometheus-client from the sink)",
                    ["part", "us per request"],
                    [
                        ["sink (tally + streams in flight)", mc["sink_us"]],
                        ["push, once a second (its share)", mc["flush_us_per_request"]],
                        ["total", mc["total_us"]],
                        ["instead: prometheus-client updates per request", mc["direct_us"]],
                    ],
                )
            )
            results["tracing"] = tc = tracing_cost()
            tracing_rows: list[list[report.Cell]] = [
                ["overhead header (computed and formatted)", tc["overhead_header_us"], tc["overhead_header_us"]]
            ]
            tracing_rows += [
                [label, tc[f"unary_{key}_us"], tc[f"stream_{key}_us"]]
                for label, key in (
                    ("tracing off", "off"),
                    ("tracing off, caller's traceparent", "off_traceparent"),
                    ("tracing on, not sampled", "unsampled"),
                    ("tracing on, sampled", "on"),
                )
            ]
            section(
                table(
                    "4e. overhead header and tracing  (in-process, CPU per chat request through the pipeline: "
                    "unary, and a stream of 11 batches; the x-ghostllm-overhead-ms value alone; tracing off, "
                    "off with a caller's traceparent, on but not sampled, on and sampled with OTLP encoding)",
                    ["case", "unary us", "stream us"],
                    tracing_rows,
                )
            )
            parts: list[tuple[str, Callable[[], Any]]] = [
                ("throughput", lambda: throughput(stack, fast, d)),
                ("latency", lambda: latency(stack, fast, d)),
            ]
            if not args.skip_stream:
                parts.append(("streaming", lambda: streaming(stack, paced, d, tmp)))
            if args.soak:
                parts.append(("soak", lambda: soak(stack, args.soak, tmp)))
            if args.large_bodies:
                parts.append(("large_bodies", lambda: large_bodies(stack, args.large_bodies)))
            if not args.skip_governance:
                # Its own two stacks, one after the other, beside this one (idle meanwhile).
                parts.append(
                    (
                        "governance",
                        lambda: governance(
                            tmp, args.workers, fast, d.latency_s, d.stream_warmup_s, 1 if args.quick else 3
                        ),
                    )
                )
            if args.analytics:
                # Opt-in: seeding a million rows makes it about a minute on its own.
                parts.append(("analytics", lambda: analytics(tmp, fast.port)))
            if not args.skip_adapters:
                # Last: its own stack (and key) beside this one.
                parts.append(
                    (
                        "adapters",
                        lambda: adapters(
                            tmp, args.workers, fast, d.latency_s, d.stream_warmup_s, 1 if args.quick else 3
                        ),
                    )
                )
            rss_start = cpu.all_rss_mb(stack.gateway_pids)
            for name, part in parts:
                try:
                    results[name] = part()
                except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
                    # A broken part is reported, and the others still run.
                    print(f"\nbench: part '{name}' failed: {exc}", file=sys.stderr)
                    results.setdefault("failed", {})[name] = str(exc)
            # Memory must stay flat under sustained load (no per-request growth).
            rss_end = cpu.all_rss_mb(stack.gateway_pids)
            results["memory"] = {"rss_start_mb": rss_start, "rss_end_mb": rss_end}
            section(
                table(
                    "5. memory  (RSS after start-up, and after every part above)",
                    ["process", "start MB", "end MB", "growth MB"],
                    [
                        [n, rss_start[n], rss_end.get(n, float("nan")), rss_end.get(n, 0.0) - rss_start[n]]
                        for n in rss_start
                    ],
                )
            )
        ok = "failed" not in results
    except KeyboardInterrupt:
        print("\nbench: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    finally:
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
    section(summary(results, cores))
    if not ok:
        print(f"\nsome parts failed; logs kept in {tmp}")
    path = report.write_json(results)
    print(f"\nfull results: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (and SIGINT even when a parent shell ignored it) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark GhostLLM (prints a report).")
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default 0: derived from the cores)")
    parser.add_argument("--skip-stream", action="store_true", help="skip the streaming part")
    parser.add_argument("--skip-adapters", action="store_true", help="skip the per-adapter part")
    parser.add_argument(
        "--skip-governance", action="store_true", help="skip governance on (Redis, PostgreSQL) vs the spine"
    )
    parser.add_argument(
        "--analytics", action="store_true", help="add GET /admin/usage over 1M usage rows in PostgreSQL (about 1 min)"
    )
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS", help="add a mixed-load soak this long")
    parser.add_argument(
        "--large-bodies", type=int, default=0, metavar="N", help="add N concurrent 30 MiB requests (peak and after RSS)"
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

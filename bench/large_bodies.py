"""Large bodies: N concurrent ~30 MiB chat requests; peak RSS during them and RSS after.

Memory per request must be bounded (no several copies of a body held at once) and
processes must come back near their baseline afterwards.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import threading
import time
from typing import Any

import orjson

from bench import auth, cpu
from bench.procs import CHAT_PATH, Stack
from bench.report import section, table

BODY_MIB = 30
# Time for the processes to give memory back before "after" is read.
SETTLE_S = 3.0


def _post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", CHAT_PATH, body=body, headers={"content-type": "application/json", **auth.headers()})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def large_bodies(stack: Stack, concurrency: int) -> dict[str, Any]:
    pids = stack.gateway_pids
    words = BODY_MIB * 1024 * 1024 // 5
    message = {"role": "user", "content": "word " * words}
    body = orjson.dumps({"model": "dev-echo", "max_tokens": 5, "messages": [message]})
    before = cpu.all_rss_mb(pids)
    peak = dict(before)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for name, mb in cpu.all_rss_mb(pids).items():
                peak[name] = max(peak.get(name, 0.0), mb)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        statuses = list(pool.map(lambda _: _post(stack.rest_port, body), range(concurrency)))
    elapsed = time.monotonic() - started
    time.sleep(SETTLE_S)
    done.set()
    sampler.join()
    after = cpu.all_rss_mb(pids)
    names = list(pids)
    section(
        table(
            f"7. large bodies  ({concurrency} concurrent {len(body) / 2**20:.0f} MiB chat requests, {elapsed:.1f}s, "
            f"statuses {sorted(set(statuses))}; RSS MB, 'after' {SETTLE_S:g}s later)",
            ["process", "before", "peak", "after"],
            [[n, before.get(n, 0.0), peak.get(n, 0.0), after.get(n, 0.0)] for n in names],
        )
    )
    return {"concurrency": concurrency, "statuses": statuses, "before": before, "peak": peak, "after": after}

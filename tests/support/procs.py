"""Real processes for tests: free ports, start, wait, and always stop."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.auth import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(count: int) -> int:
    """`count` consecutive free ports below the ephemeral range (worker ports)."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stop a process and everything in its session, whatever state it is in."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@dataclass
class Upstream:
    """A running development upstream."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def _serving(cmd: list[str], log: Path, port: int) -> Iterator[Upstream]:
    """`cmd` started, once it listens on `port`; stopped however the block ends."""
    proc = start(cmd, log)
    try:
        wait_port(port, proc)
        yield Upstream(port, proc)
    finally:
        stop(proc)


def dev_upstream(tmp: Path, chunk_delay_ms: float = 0.0) -> contextlib.AbstractContextManager[Upstream]:
    port = free_port()
    cmd = [sys.executable, "-m", "ghostllm.devupstream", "--port", str(port)]
    if chunk_delay_ms:
        cmd += ["--chunk-delay-ms", str(chunk_delay_ms)]
    return _serving(cmd, tmp / f"upstream-{port}.log", port)


def emulator(tmp: Path, provider: str) -> contextlib.AbstractContextManager[Upstream]:
    """A loopback emulator of `provider`'s native API (ghostllm/emulators/), on a free port."""
    port = free_port()
    cmd = [sys.executable, "-m", "ghostllm.emulators", provider, "--port", str(port)]
    return _serving(cmd, tmp / f"emulator-{provider}-{port}.log", port)


def reset_emulator(upstream: Upstream) -> None:
    """Make an emulator forget the requests it has received (ghostllm/emulators/contract.py)."""
    httpx.post(f"{upstream.url}/_emulator/reset", timeout=10).raise_for_status()


def emulator_received(upstream: Upstream) -> list[dict[str, Any]]:
    """Every request an emulator has received since it started or was reset, oldest first."""
    found: list[dict[str, Any]] = httpx.get(f"{upstream.url}/_emulator/requests", timeout=10).json()
    return found


# Upstream scenario models of the development upstream, served under the same ids.
SCENARIO_MODELS = (
    "error-500",
    "error-503",
    "error-401",
    "error-400",
    "error-429",
    "garbage-sse",
    "reset",
    "cut-stream",
    "slow-chunks-100",
    "slow-chunks-300",
    "wrong-shape",
    # Just over the gateway's answer limit with the default max_request_bytes (64 MiB).
    "oversized-65",
    "oversized-chunked-65",
    "long-error-500",
)


def server_config(tmp: Path, workers: int, **server: Any) -> dict[str, Any]:
    """A `server` section on free loopback ports, its run directory under `tmp`."""
    return {
        "host": "127.0.0.1",
        "rest_port": free_port(),
        "grpc_port": free_port(),
        "admin_port": free_port(),
        # Never the default 9090: stacks run side by side.
        "metrics_port": free_port(),
        "workers": workers,
        "worker_base_port": free_port_block(workers),
        "run_dir": str(tmp / "run"),
        "data_dir": str(tmp / "data"),
        **server,
    }


def stack_config(upstream_port: int, tmp: Path, *, workers: int = 2, **server: Any) -> dict[str, Any]:
    base_url = f"http://127.0.0.1:{upstream_port}/v1"
    all_caps = ["chat", "streaming", "functions", "vision", "completions", "embeddings"]
    return {
        "server": server_config(tmp, workers, **{"shutdown_grace_s": 20, **server}),
        # Provider health is checked before the workers serve and when a reload adds a provider;
        # background rounds in between would land in the upstream request counts tests compare.
        "routing": {"health_check_interval_s": 3600},
        "providers": [
            {"id": "dev", "type": "openai", "base_url": base_url, "api_key_env": "GHOSTLLM_TEST_UPSTREAM_KEY"},
            {"id": "dev-short", "type": "openai", "base_url": base_url, "timeout_s": 1.0},
            {"id": "dead", "type": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "connect_timeout_s": 1},
        ],
        "models": [
            {
                "id": "dev-echo",
                "provider": "dev",
                "context_length": 8192,
                "input_price_per_1m": 1.5,
                "output_price_per_1m": 2.0,
                "capabilities": all_caps,
            },
            {"id": "dev-embed", "provider": "dev", "capabilities": ["embeddings"]},
            {"id": "gpt-test", "provider": "dev", "upstream_model": "dev-echo", "capabilities": all_caps},
            *({"id": m, "provider": "dev", "capabilities": all_caps} for m in SCENARIO_MODELS),
            {"id": "too-slow", "provider": "dev-short", "upstream_model": "slow-5000"},
            {"id": "hangs", "provider": "dev-short", "upstream_model": "hang"},
            {"id": "unreachable", "provider": "dead"},
        ],
    }


@dataclass
class Stack:
    """A running `ghostllm serve` (Envoy + workers) and what tests need to reach it."""

    proc: subprocess.Popen[bytes]
    config: dict[str, Any]
    upstream_port: int
    log: Path

    @property
    def rest_port(self) -> int:
        return int(self.config["server"]["rest_port"])

    @property
    def grpc_port(self) -> int:
        return int(self.config["server"]["grpc_port"])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.config["server"].get("tls") else "http"
        return f"{scheme}://localhost:{self.rest_port}/v1"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.config['server']['admin_port']}"

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    def worker_pid(self, index: int) -> int:
        port = int(self.config["server"]["worker_base_port"]) + index
        out = subprocess.run(["pgrep", "-f", f"ghostllm worker --port {port} "], capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split()]
        assert len(pids) == 1, f"expected one worker on port {port}, found {pids}"
        return pids[0]


def start_stack(config: dict[str, Any], upstream_port: int, tmp: Path) -> Stack:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "ghostllm.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / "serve.log"
    env = {"GHOSTLLM_TEST_UPSTREAM_KEY": "sk-upstream-secret", "GHOSTLLM_ADMIN_KEY": ADMIN_KEY}
    proc = start([sys.executable, "-m", "ghostllm", "serve", "-c", str(path)], log, env)
    stack = Stack(proc, config, upstream_port, log)
    deadline = time.monotonic() + 30
    while b"GhostLLM ready" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"ghostllm serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return stack


@contextlib.contextmanager
def running_stack(config: dict[str, Any], upstream: Upstream, tmp: Path) -> Iterator[Stack]:
    """start_stack for a `with`: the stack is stopped however the block ends."""
    stack = start_stack(config, upstream.port, tmp)
    try:
        yield stack
    finally:
        stop(stack.proc)

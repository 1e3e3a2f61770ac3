"""Processes for the benchmark: free ports, dev upstreams, the GhostLLM stack; always stopped."""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench import auth
from ghostllm.config import default_workers

# The same process helpers the tests use: one implementation of "start, wait, always stop".
from tests.support.procs import server_config, start, stop

ROOT = Path(__file__).resolve().parents[1]
CHAT_PATH = "/v1/chat/completions"
CHAT_BODY = b'{"model":"dev-echo","messages":[{"role":"user","content":"hi"}]}'
# The gateway's name for the paced upstream's dev-echo model (streaming part).
PACED_MODEL = "dev-echo-paced"


def stack_config(fast_port: int, paced_port: int, tmp: Path, workers: int) -> dict[str, Any]:
    """Two providers: the fast upstream serves dev-echo, the paced one serves dev-echo-paced."""
    count = workers if workers > 0 else default_workers()
    return {
        "server": server_config(tmp, count, shutdown_grace_s=3, log_level="WARNING"),
        "providers": [
            {"id": "fast", "type": "openai", "base_url": f"http://127.0.0.1:{fast_port}/v1"},
            {"id": "paced", "type": "openai", "base_url": f"http://127.0.0.1:{paced_port}/v1"},
        ],
        "models": [
            {"id": "dev-echo", "provider": "fast", "capabilities": ["chat", "streaming"]},
            {
                "id": PACED_MODEL,
                "provider": "paced",
                "upstream_model": "dev-echo",
                "capabilities": ["chat", "streaming"],
            },
        ],
    }


def chat_ok(port: int, timeout: float = 2.0) -> bool:
    """One non-streaming chat completion on 127.0.0.1:port; True when it is a 200 with choices."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", CHAT_PATH, body=CHAT_BODY, headers={"content-type": "application/json", **auth.headers()})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status == 200 and b'"choices"' in body
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@dataclass
class Stack:
    """A running `ghostllm serve` (Envoy + workers)."""

    proc: subprocess.Popen[bytes]
    config: dict[str, Any]
    log: Path
    first_answer_s: float = 0.0
    ready_line_s: float | None = None
    envoy_pid: int = 0
    worker_pids: dict[int, int] = field(default_factory=dict)  # worker port -> pid
    descendants: list[int] = field(default_factory=list)

    @property
    def rest_port(self) -> int:
        return int(self.config["server"]["rest_port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def gateway_pids(self) -> dict[str, int]:
        """Envoy and every worker, by a readable name."""
        pids = {"envoy": self.envoy_pid}
        pids.update({f"worker:{port}": pid for port, pid in sorted(self.worker_pids.items())})
        return pids

    def find_processes(self, expected_workers: int, timeout: float = 10.0) -> None:
        run_dir = str(self.config["server"]["run_dir"])
        envoy_json = f"{run_dir}/envoy.json"
        deadline = time.monotonic() + timeout
        while True:
            envoy, workers, everything = 0, {}, []
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    try:
                        cmd = child.cmdline()
                    except psutil.Error:
                        continue
                    everything.append(child.pid)
                    if envoy_json in cmd:
                        envoy = child.pid
                    elif "worker" in cmd and "--port" in cmd:
                        workers[int(cmd[cmd.index("--port") + 1])] = child.pid
            if envoy and len(workers) == expected_workers:
                self.envoy_pid, self.worker_pids, self.descendants = envoy, workers, everything
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway processes not found (envoy={envoy}, workers={workers})")
            time.sleep(0.05)

    def stop(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.descendants = sorted(
                {*self.descendants, *(c.pid for c in psutil.Process(self.proc.pid).children(True))}
            )
        stop(self.proc, timeout=15)
        # Children run in their own sessions (and die with the supervisor); make sure of it, by pid.
        for pid in self.descendants:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                p.kill()
                p.wait(5)


def start_stack(config: dict[str, Any], tmp: Path, timeout: float = 30.0) -> Stack:
    """Spawn `ghostllm serve` and poll tightly until a chat completion through Envoy succeeds."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "ghostllm.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / "serve.log"
    log.write_bytes(b"")
    rest_port = int(config["server"]["rest_port"])
    started = time.monotonic()
    proc = start([sys.executable, "-m", "ghostllm", "serve", "-c", str(path)], log)
    stack = Stack(proc, config, log)
    try:
        answered = False
        while not answered or stack.ready_line_s is None:
            now = time.monotonic()
            if proc.poll() is not None or now - started > timeout:
                raise RuntimeError(f"ghostllm serve did not start:\n{log.read_text()[-3000:]}")
            if stack.ready_line_s is None and b"GhostLLM ready" in log.read_bytes():
                stack.ready_line_s = now - started
            if not answered and chat_ok(rest_port, timeout=1.0):
                answered = True
                stack.first_answer_s = time.monotonic() - started
            time.sleep(0.005 if not answered else 0.02)
        count = int(config["server"]["workers"]) or default_workers()
        stack.find_processes(count)
    except BaseException:
        stack.stop()
        raise
    return stack

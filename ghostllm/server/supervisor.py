"""`ghostllm serve`: N worker processes and Envoy, supervised as one unit.

Children run in their own session so a terminal's Ctrl-C reaches only this
process, which then shuts down in order: workers drain first (Envoy keeps
relaying their in-flight streams), then Envoy stops. Children also get
PR_SET_PDEATHSIG, so nothing outlives a supervisor that was killed outright.
A worker that dies unexpectedly is restarted; Envoy's health checks and retries
hide the gap from clients. Provider model discovery runs here too, so every worker
serves the same lists (server/discovery.py). With `server.metrics_port` set, a metrics
exporter process serves GET /metrics for all of them (ghostllm/metrics/exporter.py); this
process owns the directory the workers write their metrics to (ghostllm/metrics/directory.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ghostllm.config import Config
from ghostllm.metrics import directory as metrics_directory
from ghostllm.server.envoy import envoy_command, write_envoy_config

if TYPE_CHECKING:
    from ghostllm.auth.bootstrap import Bootstrap
    from ghostllm.server.discovery import Discovery

log = logging.getLogger("ghostllm.serve")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(cmd: list[str], log_file: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = open(log_file, "wb") if log_file else None  # noqa: SIM115 - owned by the child for its lifetime
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=env,
        )
    finally:
        if out:
            out.close()


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


@dataclass
class Child:
    name: str
    cmd: list[str]
    log_file: Path | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    # None: this process's environment.
    env: dict[str, str] | None = None

    def start(self) -> None:
        self.proc = _spawn(self.cmd, self.log_file, self.env)
        self.started_at = time.monotonic()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Supervisor:
    config: Config
    config_path: str
    workers: list[Child] = field(default_factory=list)
    envoy: Child | None = None
    dev_upstreams: list[Child] = field(default_factory=list)
    # Serves GET /metrics; None when server.metrics_port is 0.
    exporter: Child | None = None
    metrics_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    run_dir: Path | None = None
    bootstrap: Bootstrap | None = None
    discovery: Discovery | None = None
    _stop_requested: bool = False

    def _check_upstreams(self) -> None:
        """Start the development upstream where asked, and say which local upstreams answer."""
        for p in self.config.providers:
            host, port = p.address
            if not p.dev_upstream:
                if p.discover_models and host in ("127.0.0.1", "localhost", "::1"):
                    state = "answering: its models are served" if port_open(host, port) else "not answering"
                    self.notes.append(f"provider {p.id} at {p.base_url}: {state}")
                continue
            if port_open(host, port):
                self.notes.append(f"provider {p.id}: using the server already answering at {p.base_url}")
                continue
            child = Child(
                f"dev-upstream:{port}",
                [sys.executable, "-m", "ghostllm.devupstream", "--host", host, "--port", str(port)],
            )
            child.start()
            self.dev_upstreams.append(child)
            self.notes.append(
                f"provider {p.id}: nothing answered at {p.base_url}, started the built-in DEVELOPMENT upstream "
                "there (canned answers, not a real model)"
            )

    def start(self) -> Path:
        # Imported here: discovery needs the provider stack, which `serve` needs for nothing else.
        from ghostllm.auth.bootstrap import ensure_admin_sync
        from ghostllm.auth.tokens import load_secret
        from ghostllm.server.discovery import Discovery
        from ghostllm.store.startup import prepare_store_sync

        # Before anything starts: SQLite is migrated, a PostgreSQL schema that is not the code's refuses.
        self.notes.append(prepare_store_sync(self.config))
        s = self.config.server
        run_dir = self.run_dir = Path(s.run_dir or tempfile.mkdtemp(prefix="ghostllm-"))
        run_dir.mkdir(parents=True, exist_ok=True)
        self._check_upstreams()
        ports = [s.worker_base_port + i for i in range(s.worker_count)]
        # Envoy first: its start-up overlaps model discovery and the workers' imports.
        envoy_config = write_envoy_config(self.config, ports, run_dir)
        self.envoy = Child("envoy", envoy_command(self.config, envoy_config, run_dir), run_dir / "envoy.out")
        self.envoy.start()
        worker_env = self._start_exporter(run_dir)
        # While Envoy starts: the first-start admin, and the login-token secret (made here
        # once, so workers never race to create it).
        self.bootstrap = ensure_admin_sync(self.config)
        load_secret(self.config.auth.jwt_secret, self.config.server.data_dir)
        if not self.config.auth.enabled:
            log.warning("AUTHENTICATION IS OFF (auth.enabled: false): anyone who reaches the gateway is an admin")
        # Here, not per worker: every worker (also a restarted one) serves the same catalogue.
        # The first round before the workers start; later ones while supervising.
        discovered = run_dir / "discovered.json"
        self.discovery = Discovery(self.config, discovered)
        self.discovery.start()
        for port in ports:
            ready = run_dir / f"worker-{port}.ready"
            ready.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "ghostllm", "worker", "--port", str(port), "--ready-file", str(ready)]
            if self.discovery.active:
                # Only then: a worker watching the file polls it every catalogue.poll_s.
                cmd += ["--discovered", str(discovered)]
            if self.config_path:
                cmd += ["--config", self.config_path]
            child = Child(f"worker:{port}", cmd, port=port, env=worker_env)
            child.start()
            self.workers.append(child)
        return run_dir

    def _start_exporter(self, run_dir: Path) -> dict[str, str] | None:
        """The metrics exporter, on an emptied directory; the workers' environment, which names it."""
        s = self.config.server
        if not s.metrics_port:
            return None
        self.metrics_dir = metrics_directory.prepare(run_dir)
        cmd = [sys.executable, "-m", "ghostllm.metrics", "--host", s.host, "--port", str(s.metrics_port)]
        cmd += ["--dir", str(self.metrics_dir), "--envoy-admin", f"http://127.0.0.1:{s.admin_port}"]
        self.exporter = Child("metrics", cmd, run_dir / "metrics.out", port=s.metrics_port)
        self.exporter.start()
        return metrics_directory.worker_env(self.metrics_dir)

    def _exporter_listening(self) -> bool:
        if self.exporter is None:
            return True
        host = self.config.server.host
        return port_open({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), self.exporter.port)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once Envoy is live, every worker accepts connections and the metrics exporter listens."""
        deadline = time.monotonic() + timeout
        admin = f"http://127.0.0.1:{self.config.server.admin_port}/ready"
        while time.monotonic() < deadline:
            if self.envoy is None or not self.envoy.running():
                return False
            for w in self.workers:
                if not w.running():
                    code = w.proc.returncode if w.proc else None
                    log.error("%s exited with %s while starting (is its port taken?)", w.name, code)
                    return False
            if self.exporter is not None and not self.exporter.running():
                code = self.exporter.proc.returncode if self.exporter.proc else None
                log.error(
                    "the metrics exporter exited with %s while starting (is server.metrics_port %d taken?)",
                    code,
                    self.exporter.port,
                )
                return False
            try:
                with urllib.request.urlopen(admin, timeout=0.5) as resp:
                    envoy_ok = resp.status == 200
            except (urllib.error.URLError, OSError):
                envoy_ok = False
            if envoy_ok and all(self._serving(w) for w in self.workers) and self._exporter_listening():
                return True
            time.sleep(0.05)
        return False

    def _serving(self, w: Child) -> bool:
        """The worker wrote its pid to its ready file (an open port might be another process's)."""
        if w.proc is None or self.run_dir is None:
            return False
        try:
            return (self.run_dir / f"worker-{w.port}.ready").read_text() == str(w.proc.pid)
        except OSError:
            return False

    def request_stop(self, *_: object) -> None:
        self._stop_requested = True

    def supervise(self) -> int:
        """Restart dead workers until asked to stop; returns the exit code."""
        while not self._stop_requested:
            if self.envoy is None or not self.envoy.running():
                log.error("envoy exited unexpectedly; see its log in the run directory")
                return 1
            now = time.monotonic()
            for w in (*self.workers, *(() if self.exporter is None else (self.exporter,))):
                if not w.running() and now >= w.next_start:
                    code = w.proc.returncode if w.proc else None
                    if w.proc is not None:
                        log.warning("%s exited with %s; restarting", w.name, code)
                        if self.metrics_dir is not None and w is not self.exporter:
                            # Its streams in flight and other live gauges end with it; its counts stay.
                            metrics_directory.worker_exited(self.metrics_dir, w.proc.pid)
                    # Back off from a worker that keeps dying, not from one that ran for a while.
                    if now - w.started_at > 30:
                        w.restarts = 0
                    w.restarts += 1
                    w.next_start = now + min(10.0, 0.5 * w.restarts)
                    w.start()
            if self.discovery is not None:
                self.discovery.run_for(0.1)  # its background rounds run meanwhile
            else:
                time.sleep(0.1)
        return 0

    def shutdown(self) -> None:
        grace = self.config.server.shutdown_grace_s
        # Tell load balancers in front to stop sending, and clients to reconnect
        # elsewhere (Connection: close / GOAWAY); streams in flight carry on.
        for action in ("healthcheck/fail", "drain_listeners?graceful"):
            with contextlib.suppress(OSError, urllib.error.URLError):
                req = urllib.request.Request(
                    f"http://127.0.0.1:{self.config.server.admin_port}/{action}", method="POST"
                )
                urllib.request.urlopen(req, timeout=1).close()
        for w in self.workers:
            if w.running() and w.proc is not None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + 5
        for w in self.workers:
            if w.proc is not None:
                _stop(w.proc, signal.SIGTERM, max(0.1, deadline - time.monotonic()))
        if self.envoy and self.envoy.proc:
            _stop(self.envoy.proc, signal.SIGTERM, 5)
        if self.exporter and self.exporter.proc:
            _stop(self.exporter.proc, signal.SIGTERM, 5)
        for d in self.dev_upstreams:
            if d.proc:
                _stop(d.proc, signal.SIGTERM, 5)
        if self.discovery is not None:
            self.discovery.close()


def describe(config: Config, notes: list[str], boot: Bootstrap | None = None) -> str:
    s = config.server
    scheme = "https" if s.tls.enabled else "http"
    host = "localhost" if s.host in ("0.0.0.0", "::") else s.host
    model = config.models[0].id if config.models else "MODEL"
    base = f"{scheme}://{host}:{s.rest_port}/v1"
    auth: list[str] = []
    if not config.auth.enabled:
        key_expr, key_py = "none", '"none"'
        auth.append("  WARNING: authentication is OFF (auth.enabled: false); anyone who reaches it is an admin")
    elif boot is not None and boot.created_key:
        key_expr, key_py = boot.created_key, f'"{boot.created_key}"'
        auth.append(f"  admin key (shown once; also in {boot.key_file}, mode 0600): {boot.created_key}")
    elif boot is not None and boot.key_file.exists():
        key_expr, key_py = f"$(cat {boot.key_file})", f'open("{boot.key_file}").read().strip()'
        auth.append(f"  admin key: in {boot.key_file}")
    else:
        key_expr, key_py = "$GHOSTLLM_API_KEY", 'os.environ["GHOSTLLM_API_KEY"]'
        auth.append("  API keys: ghostllm key create --user EMAIL --name NAME")
    lines = [
        f"GhostLLM ready: {s.worker_count} worker(s) behind Envoy",
        f"  REST (OpenAI-compatible): {base}",
        f"  gRPC:                     {host}:{s.grpc_port}",
        f"  Envoy admin (loopback):   http://127.0.0.1:{s.admin_port}",
        *([f"  Metrics (Prometheus):     http://{host}:{s.metrics_port}/metrics"] if s.metrics_port else []),
        *auth,
        *(f"  {n}" for n in notes),
        "Try:",
        f'  curl -s {base}/chat/completions -H "authorization: Bearer {key_expr}" \\',
        "    -H 'content-type: application/json' \\",
        f'    -d \'{{"model":"{model}","messages":[{{"role":"user","content":"Hello"}}]}}\'',
        "  python -c 'import os; from openai import OpenAI; c = OpenAI(base_url=\""
        + base
        + f'", api_key={key_py}); print(c.chat.completions.create(model="'
        + model
        + '", messages=[{"role": "user", "content": "Hello"}]).choices[0].message.content)\'',
    ]
    return "\n".join(lines)


def serve(config: Config, config_path: str) -> int:
    sup = Supervisor(config, config_path)
    signal.signal(signal.SIGTERM, sup.request_stop)
    signal.signal(signal.SIGINT, sup.request_stop)
    started = time.monotonic()
    code = 1
    try:
        run_dir = sup.start()
        if not sup.wait_ready():
            out = run_dir / "envoy.out"
            tail = out.read_text(errors="replace").strip().splitlines()[-3:] if out.exists() else []
            log.error("GhostLLM did not become ready; Envoy said:\n  %s\n(full log: %s)", "\n  ".join(tail), out)
            return code
        print(describe(config, sup.notes, sup.bootstrap), flush=True)
        log.info("ready in %.2fs (run directory %s)", time.monotonic() - started, run_dir)
        code = sup.supervise()
        return code
    finally:
        log.info("shutting down")
        sup.shutdown()
        # A temporary run directory is ours to remove, unless its logs explain a failure.
        if code == 0 and not config.server.run_dir and sup.run_dir is not None:
            shutil.rmtree(sup.run_dir, ignore_errors=True)

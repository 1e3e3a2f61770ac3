"""GET /health: the gateway and its providers, for HTTP probes."""

from __future__ import annotations

from pathlib import Path

from tests.support.http import request
from tests.support.procs import Stack, free_port, stack_config, start_stack, stop


def test_health_reports_each_provider(stack: Stack) -> None:
    reply = request(f"http://127.0.0.1:{stack.rest_port}/health")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    # The test config has one unreachable provider: still serving, so 200.
    assert body["status"] == "degraded" and body["service"] == "GhostLLM" and body["version"]
    providers = {p["id"]: p for p in body["providers"]}
    assert providers["dev"]["healthy"] is True and providers["dev"]["models_count"] > 1
    assert providers["dead"]["healthy"] is False and providers["dead"]["models_count"] == 1
    assert "ghostllm-http-status" not in reply.headers


def test_health_is_503_when_no_provider_answers(upstream_port: int, tmp_path: Path) -> None:
    config = stack_config(upstream_port, tmp_path, workers=1)
    config["providers"] = [{"id": "dead", "type": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1"}]
    config["models"] = [{"id": "unreachable", "provider": "dead"}]
    s = start_stack(config, upstream_port, tmp_path)
    try:
        reply = request(f"http://127.0.0.1:{s.rest_port}/health")
        assert reply.status == 503
        assert reply.json()["status"] == "unhealthy"
    finally:
        stop(s.proc)

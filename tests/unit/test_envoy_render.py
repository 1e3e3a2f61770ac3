"""ghostllm.server.envoy: what the rendered Envoy configuration promises, without Envoy."""

from __future__ import annotations

from typing import Any

from ghostllm.config import parse_config
from ghostllm.server.envoy import (
    MAX_REQUEST_HEADERS_KB,
    MAX_RESPONSE_HEADER_FIELD_KB,
    MAX_RESPONSE_HEADERS_KB,
    grpc_max_metadata_bytes,
    render_envoy_config,
)
from ghostllm.server.worker import grpc_options

PROVIDERS = {"providers": [{"id": "p", "base_url": "http://127.0.0.1:1/v1"}], "models": [{"id": "m", "provider": "p"}]}


def render(**server: Any) -> dict[str, Any]:
    return render_envoy_config(parse_config({**PROVIDERS, "server": server}, env={}), [20100, 20101])


def hcm(doc: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def http_filter(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in hcm(doc)["http_filters"] if f["name"] == name)
    return found


def test_request_receive_bounds() -> None:
    h = hcm(render())
    assert h["request_timeout"] == "120s"
    assert h["request_headers_timeout"] == "10s"
    # Answers are bounded by the configured route and idle timeouts, not by request_timeout.
    assert h["stream_idle_timeout"] == "600s"
    assert h["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] == "600s"


def test_header_limits_line_up() -> None:
    doc = render()
    assert hcm(doc)["max_request_headers_kb"] == MAX_REQUEST_HEADERS_KB
    options = dict(grpc_options(parse_config(PROVIDERS, env={})))
    for key in ("grpc.max_metadata_size", "grpc.absolute_max_metadata_size"):
        assert options[key] == grpc_max_metadata_bytes() >= (MAX_REQUEST_HEADERS_KB + 8) * 1024
    upstream = doc["static_resources"]["clusters"][0]["typed_extension_protocol_options"]
    protocol = upstream["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert protocol["common_http_protocol_options"]["max_response_headers_kb"] == MAX_RESPONSE_HEADERS_KB
    h2 = protocol["explicit_http_config"]["http2_protocol_options"]
    assert h2["max_header_field_size_kb"] == MAX_RESPONSE_HEADER_FIELD_KB <= MAX_RESPONSE_HEADERS_KB


def test_no_rest_request_is_forwarded_untranscoded() -> None:
    routes = hcm(render())["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"]["headers"][0]["name"] == "content-type"
    assert routes[-1]["route"]["cluster"] != "workers"
    transcoder = http_filter(render(), "envoy.filters.http.grpc_json_transcoder")["typed_config"]
    assert transcoder["ignore_unknown_query_parameters"] is True
    assert transcoder["request_validation_options"]["reject_unknown_query_parameters"] is True


def test_cors_off_unless_configured() -> None:
    doc = render()
    assert all(f["name"] != "envoy.filters.http.cors" for f in hcm(doc)["http_filters"])
    assert "envoy.filters.http.cors" not in hcm(doc)["route_config"]["virtual_hosts"][0].get(
        "typed_per_filter_config", {}
    )


def test_cors_rendered_from_config() -> None:
    doc = render(cors={"allow_origins": ["https://app.example", "*"], "allow_credentials": True, "max_age_s": 60})
    assert hcm(doc)["http_filters"][0]["name"] == "envoy.filters.http.cors"
    policy = hcm(doc)["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert policy["allow_origin_string_match"] == [{"exact": "https://app.example"}, {"safe_regex": {"regex": ".*"}}]
    assert policy["allow_credentials"] is True and policy["max_age"] == "60"
    assert "POST" in policy["allow_methods"] and "authorization" in policy["allow_headers"]
    assert policy["expose_headers"].split(", ")[:2] == ["x-request-id", "retry-after"]

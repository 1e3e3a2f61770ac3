"""`tracing:`: off by default, its fields and environment overrides, its checks, and where the
exporter sends spans; and the CORS policy that lets browsers take part (send trace context,
read the overhead and deployment headers)."""

from __future__ import annotations

import pytest

from ghostllm.config import TracingConfig, parse_config
from ghostllm.errors import ConfigError
from ghostllm.server.envoy import render_envoy_config
from ghostllm.tracing.tracer import traces_url


def test_off_by_default() -> None:
    t = parse_config({}, env={}).tracing
    assert t == TracingConfig() and not t.enabled
    assert (t.endpoint, t.service_name, t.sample_ratio, dict(t.headers)) == ("", "ghostllm", 1.0, {})


def test_yaml_and_environment() -> None:
    raw = {"tracing": {"enabled": True, "endpoint": "http://collector:4318", "headers": {"x-tenant": "a"}}}
    t = parse_config(raw, env={}).tracing
    assert t.enabled and t.endpoint == "http://collector:4318" and dict(t.headers) == {"x-tenant": "a"}
    env = {"GHOSTLLM_TRACING_ENABLED": "true", "GHOSTLLM_TRACING_SAMPLE_RATIO": "0.25",
           "GHOSTLLM_TRACING_SERVICE_NAME": "gw-eu"}  # fmt: skip
    t = parse_config({}, env=env).tracing
    assert (t.enabled, t.sample_ratio, t.service_name) == (True, 0.25, "gw-eu")


@pytest.mark.parametrize(
    ("tracing", "message"),
    [
        ({"sample_ratio": 1.5}, "tracing.sample_ratio: expected 0 to 1"),
        ({"sample_ratio": -0.1}, "tracing.sample_ratio"),
        ({"endpoint": "collector:4318"}, "tracing.endpoint: expected http://"),
        ({"service_name": ""}, "tracing.service_name"),
        ({"sampel_ratio": 1}, "tracing.sampel_ratio"),
    ],
)
def test_bad_values_are_refused(tracing: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"tracing": tracing}, env={})


def test_the_traces_url() -> None:
    assert traces_url("") is None  # the exporter's own: OTEL_EXPORTER_OTLP_*_ENDPOINT, else localhost:4318
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("https://collector:4318/") == "https://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/custom/traces") == "http://collector:4318/custom/traces"


def test_browsers_may_send_trace_context_and_read_our_headers() -> None:
    config = parse_config({"server": {"cors": {"allow_origins": ["https://app.example"]}}}, env={})
    hcm = render_envoy_config(config, [20100])["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    vhost = hcm["typed_config"]["route_config"]["virtual_hosts"][0]
    policy = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
    exposed, allowed = policy["expose_headers"].split(", "), policy["allow_headers"].split(", ")
    assert {"x-ghostllm-overhead-ms", "x-ghostllm-deployment"} <= set(exposed)
    assert {"traceparent", "tracestate"} <= set(allowed)

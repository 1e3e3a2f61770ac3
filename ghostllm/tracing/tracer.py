"""One worker's tracer, from `tracing:`: the OpenTelemetry SDK with a sampler (the caller's
decision when it sent a traceparent, else `sample_ratio`), a batch span processor (spans are
queued by the request and exported from the processor's own thread, never awaited) and the
OTLP/HTTP protobuf exporter. Each worker process has its own; importing this module loads the
SDK, which only a worker with tracing on does."""

from __future__ import annotations

from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from ghostllm.config import TracingConfig
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.tracing.spans import RequestTrace
from ghostllm.version import VERSION

TRACES_PATH = "/v1/traces"
# One export's limit: a collector that does not answer delays only the export thread, and the
# worker's shutdown (which flushes) stays within its teardown budget.
EXPORT_TIMEOUT_S = 2.0
SHUTDOWN_TIMEOUT_MS = 1500


def traces_url(endpoint: str) -> str | None:
    """The OTLP/HTTP traces URL for `tracing.endpoint` (a base URL gets /v1/traces); None: the
    exporter's own choice (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, localhost)."""
    if not endpoint:
        return None
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + TRACES_PATH
    return endpoint


class Tracer:
    def __init__(self, config: TracingConfig, exporter: SpanExporter | None = None, *, batch: bool = True) -> None:
        """`exporter`: OTLP/HTTP to `config.endpoint` unless given; `batch` False exports each span
        as it ends (tests)."""
        resource = Resource.create({"service.name": config.service_name, "service.version": VERSION})
        # The worker flushes on stop; an exit hook would flush again, unbounded.
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)), resource=resource, shutdown_on_exit=False
        )
        if exporter is None:
            exporter = OTLPSpanExporter(
                endpoint=traces_url(config.endpoint), headers=dict(config.headers) or None, timeout=EXPORT_TIMEOUT_S
            )
        self.provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        self._tracer = self.provider.get_tracer("ghostllm", VERSION)

    def start(
        self, endpoint: Endpoint, started_at: float, request_id: str, traceparent: str = "", tracestate: str = ""
    ) -> RequestTrace:
        """A request's trace, its server span started at `started_at` (Unix time)."""
        return RequestTrace(self._tracer, endpoint, started_at, request_id, traceparent, tracestate)

    def flush(self, timeout_ms: int = SHUTDOWN_TIMEOUT_MS) -> bool:
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Export what is queued (bounded), then stop the export thread. Blocking: call it from a thread."""
        self.flush()
        self.provider.shutdown()

"""OpenTelemetry tracing, off by default and free when off.

w3c.py reads and writes the W3C trace context headers (the only part used when tracing is
off: a caller's traceparent is passed upstream unchanged and its ids go into the access log).
tracer.py builds one worker's tracer from `tracing:` (the SDK, a batch span processor, the
OTLP/HTTP exporter); spans.py is the span tree of one request (server span, admission, each
upstream attempt, the relay) with the GenAI semantic-convention attributes of names.py.
The SDK is imported only when tracing is on.
"""

"""Prometheus metrics: what the workers count (families.py), how a request is counted off
the hot path (tally.py, streams.py) and pushed once a second (publisher.py, state.py), the
directory the worker processes share (directory.py), and the exporter process that serves
`GET /metrics` for all of them and Envoy (exporter.py, `python -m ghostllm.metrics`)."""

"""`python -m ghostllm.metrics --port N --dir DIR [--envoy-admin URL]`: the exporter `serve` starts."""

from ghostllm.metrics.exporter import main

raise SystemExit(main())

"""GhostLLM benchmark: ``python -m bench`` (or ``make bench``) prints a report; it asserts nothing.

Parts: non-streaming throughput and gateway CPU per request (wrk), added latency at 1/16/64
clients, streaming TTFT and CPU per relayed chunk against a paced upstream, and start-up time to
the first answer. Full results go to ``bench/results/latest.json``.
"""

"""GhostLLM benchmark: ``python -m bench`` (or ``make bench``) prints a report; it asserts nothing.

Parts: non-streaming throughput and gateway CPU per request (wrk), added latency at 1/16/64
clients, streaming TTFT and CPU per relayed chunk against a paced upstream, start-up time to the first
answer, RSS, and (``--soak SECONDS``) RSS over a long mixed load. Full results go to
``bench/results/latest.json``.
"""

"""Rate limits: requests per minute, tokens per minute and parallel requests, per API key,
per user and per team, checked and counted in one atomic step for every level together.

`Limiter` (limiter.py) turns a principal into its levels and answers admit/settle;
a backend keeps the counters: `MemoryBackend` (one process) or `RedisBackend` (every
worker of every replica). The gateway's `Limits` stage and sink call the limiter.
"""

"""Who is calling: the principal a request runs as (`principal`), found from its
Authorization header (`authenticator`) by an API key, through a per-worker cache
(`cache`), or a login token (`tokens`). Kept fresh across workers and replicas by
Redis pub/sub when configured (`invalidation`), else by the cache's short TTL; key use
is written back in batches (`last_used`); the first start creates an admin (`bootstrap`).
Failed logins are counted per email and client IP, and refused at a limit (`login_guard`).
"""

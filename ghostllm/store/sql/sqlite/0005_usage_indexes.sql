-- The usage reports (ledger/queries.py) filter a period by user, key, team, model or
-- provider: provider was the one without an index. (PostgreSQL's covering period index is
-- not repeated here: SQLite sorts to group, and the sort, not reading the rows, is most of
-- a report's time, so the wider index would cost every write for little.)
CREATE INDEX idx_usage_logs_provider_created ON usage_logs(provider_id, created_at);

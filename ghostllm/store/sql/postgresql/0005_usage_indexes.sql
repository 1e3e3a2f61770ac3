-- The usage reports (ledger/queries.py: GET /admin/usage, GET /v1/usage, `ghostllm usage`)
-- read a period and, of its rows, only the columns below. This index holds them all, so a
-- report over a period is an index-only scan of it (under half the table's width, and no
-- visit to the rows: the ledger is append-only, so autovacuum keeps its pages all-visible).
-- A provider filter (a large share of the rows, so no index of its own would be cheaper) is
-- the same scan; a team filter uses its own index. It serves every query the plain
-- created_at index did, which goes.
CREATE INDEX idx_usage_logs_period ON usage_logs (created_at)
    INCLUDE (model_id, provider_id, api_key_id, user_id, prompt_tokens, completion_tokens, total_tokens,
             cost_nano_usd);
DROP INDEX idx_usage_logs_created;

-- A model's share of a period is too large to fetch row by row (a tenth of the rows touched
-- most of the table's pages, slower than no filter): its index carries the columns too. The
-- user, key and team indexes stay narrow: their few thousand rows are quick to fetch.
DROP INDEX idx_usage_logs_model_created;
CREATE INDEX idx_usage_logs_model_created ON usage_logs (model_id, created_at)
    INCLUDE (provider_id, api_key_id, user_id, prompt_tokens, completion_tokens, total_tokens, cost_nano_usd);

-- How many groups each grouping of a report makes. Without these the planner multiplies the
-- columns' distinct counts (or, for the day, knows nothing), expects about a group per row,
-- and sorts the period, or hashes it in one process, where a few thousand groups in memory
-- and parallel workers are several times faster. (Statistics on an expression: PostgreSQL 14.)
CREATE STATISTICS usage_logs_key_user (ndistinct) ON api_key_id, user_id FROM usage_logs;
CREATE STATISTICS usage_logs_model_provider_day (ndistinct)
    ON model_id, provider_id, ((created_at AT TIME ZONE 'UTC')::date) FROM usage_logs;

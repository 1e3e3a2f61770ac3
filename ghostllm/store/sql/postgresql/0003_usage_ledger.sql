-- The usage ledger: one row per request the gateway settled (success, our own refusals,
-- upstream errors, cancelled and streamed requests alike), written in batches off the
-- request path.
--
-- id is the record's own uuid, made once when the request settled: a batch written again
-- after a failure or from the spool inserts nothing twice (INSERT ... ON CONFLICT (id) DO
-- NOTHING). request_id is the client's (or Envoy's) x-request-id, which a client may reuse.
-- cost_nano_usd is exact: prices are USD per 1M tokens, so one token costs price * 1000
-- nano-USD, an integer for any price with up to three decimals; cost (USD) is kept for
-- readers of the seed's schema.
-- The foreign keys go: usage is history, and a row must never be refused because its key
-- or user was deleted while it waited in a batch.

ALTER TABLE usage_logs DROP CONSTRAINT IF EXISTS usage_logs_user_id_fkey;
ALTER TABLE usage_logs DROP CONSTRAINT IF EXISTS usage_logs_api_key_id_fkey;
ALTER TABLE usage_logs DROP CONSTRAINT IF EXISTS usage_logs_session_id_fkey;
ALTER TABLE usage_logs ALTER COLUMN id DROP DEFAULT;
ALTER TABLE usage_logs ALTER COLUMN model_id SET DEFAULT '';
ALTER TABLE usage_logs ALTER COLUMN provider_id SET DEFAULT '';
ALTER TABLE usage_logs
    ADD COLUMN team_id           UUID,
    ADD COLUMN endpoint          TEXT NOT NULL DEFAULT '',
    ADD COLUMN upstream_model    TEXT NOT NULL DEFAULT '',
    ADD COLUMN stream            BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN status            INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN error_code        TEXT,
    ADD COLUMN cached_tokens     INTEGER,
    ADD COLUMN reasoning_tokens  INTEGER,
    ADD COLUMN estimated         BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN cost_nano_usd     BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN latency_ms        DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN ttft_ms           DOUBLE PRECISION;
-- The usage queries: a period, optionally per user, key, team or model.
CREATE INDEX idx_usage_logs_created ON usage_logs(created_at);
CREATE INDEX idx_usage_logs_team_created ON usage_logs(team_id, created_at);

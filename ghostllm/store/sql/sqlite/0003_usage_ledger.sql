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
-- or user was deleted while it waited in a batch. SQLite cannot drop a foreign key, so the
-- table is rebuilt (it is empty before this version: nothing wrote it).

CREATE TABLE usage_logs_0003 (
    id                TEXT PRIMARY KEY,
    request_id        TEXT NOT NULL DEFAULT '',
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    user_id           TEXT,
    api_key_id        TEXT,
    team_id           TEXT,
    session_id        TEXT,
    endpoint          TEXT NOT NULL DEFAULT '',
    model_id          TEXT NOT NULL DEFAULT '',
    provider_id       TEXT NOT NULL DEFAULT '',
    upstream_model    TEXT NOT NULL DEFAULT '',
    stream            INTEGER NOT NULL DEFAULT 0,
    status            INTEGER NOT NULL DEFAULT 0,
    error_code        TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER,
    reasoning_tokens  INTEGER,
    estimated         INTEGER NOT NULL DEFAULT 0,
    cost_nano_usd     INTEGER NOT NULL DEFAULT 0,
    cost              REAL NOT NULL DEFAULT 0,
    latency_ms        REAL NOT NULL DEFAULT 0,
    ttft_ms           REAL,
    ip_address        TEXT NOT NULL DEFAULT '',
    user_agent        TEXT NOT NULL DEFAULT ''
);

INSERT INTO usage_logs_0003 (
    id, request_id, created_at, user_id, api_key_id, session_id, model_id, provider_id,
    prompt_tokens, completion_tokens, total_tokens, cost, ip_address, user_agent
)
SELECT
    id, request_id, created_at, user_id, api_key_id, session_id, model_id, provider_id,
    prompt_tokens, completion_tokens, total_tokens, cost, ip_address, user_agent
FROM usage_logs;

DROP TABLE usage_logs;
ALTER TABLE usage_logs_0003 RENAME TO usage_logs;
-- The usage queries: a period, optionally per user, key, team or model.
CREATE INDEX idx_usage_logs_created ON usage_logs(created_at);
CREATE INDEX idx_usage_logs_user_created ON usage_logs(user_id, created_at);
CREATE INDEX idx_usage_logs_key_created ON usage_logs(api_key_id, created_at);
CREATE INDEX idx_usage_logs_team_created ON usage_logs(team_id, created_at);
CREATE INDEX idx_usage_logs_model_created ON usage_logs(model_id, created_at);

-- The models table as the live catalogue needs it (models managed at runtime through the
-- admin API and `ghostllm model`, merged over the YAML config's; the database wins).
--
-- Added: upstream_model (the provider's name for the model; '' means the same as id),
-- capabilities (a JSON list of names from ghostllm.config.Capability), owned_by (shown by
-- /v1/models; '' means the provider id).
-- Kept: input_price and output_price are USD per 1,000,000 tokens (input, output), as the
-- config's input_price_per_1m / output_price_per_1m; name is a display name; supports_vision,
-- supports_funcs and supports_stream mirror capabilities (written together with it; the
-- gateway reads capabilities).
-- Changed: provider_id is no longer a foreign key: a model may name a provider defined only in
-- the YAML config, which has no row here (the catalogue leaves out, with a warning, a model
-- whose provider exists nowhere).
--
-- SQLite cannot drop a foreign key, so the table is rebuilt; capabilities of existing rows
-- come from their supports_* flags. Nothing references models, so the swap is safe with
-- foreign_keys on.

CREATE TABLE models_0002 (
    id              TEXT PRIMARY KEY,
    provider_id     TEXT NOT NULL,
    name            TEXT NOT NULL DEFAULT '',
    upstream_model  TEXT NOT NULL DEFAULT '',
    context_length  INTEGER NOT NULL DEFAULT 0 CHECK (context_length >= 0),
    input_price     REAL NOT NULL DEFAULT 0 CHECK (input_price >= 0),
    output_price    REAL NOT NULL DEFAULT 0 CHECK (output_price >= 0),
    capabilities    TEXT NOT NULL DEFAULT '["chat","streaming","functions","completions"]',
    owned_by        TEXT NOT NULL DEFAULT '',
    supports_vision INTEGER NOT NULL DEFAULT 0,
    supports_funcs  INTEGER NOT NULL DEFAULT 0,
    supports_stream INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

INSERT INTO models_0002 (
    id, provider_id, name, context_length, input_price, output_price, capabilities,
    supports_vision, supports_funcs, supports_stream, created_at, updated_at
)
SELECT
    id, provider_id, name, context_length, input_price, output_price,
    '["chat"'
        || CASE WHEN supports_stream THEN ',"streaming"' ELSE '' END
        || CASE WHEN supports_funcs THEN ',"functions"' ELSE '' END
        || CASE WHEN supports_vision THEN ',"vision"' ELSE '' END
        || ',"completions"]',
    supports_vision, supports_funcs, supports_stream, created_at, updated_at
FROM models;

DROP TABLE models;
ALTER TABLE models_0002 RENAME TO models;
CREATE INDEX idx_models_provider ON models(provider_id);

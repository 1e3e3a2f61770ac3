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
-- whose provider exists nowhere). Capabilities of existing rows come from their supports_* flags.

ALTER TABLE models DROP CONSTRAINT IF EXISTS models_provider_id_fkey;

ALTER TABLE models
    ADD COLUMN upstream_model TEXT NOT NULL DEFAULT '',
    ADD COLUMN capabilities   JSONB NOT NULL DEFAULT '["chat", "streaming", "functions", "completions"]'::jsonb,
    ADD COLUMN owned_by       TEXT NOT NULL DEFAULT '',
    ADD CONSTRAINT models_amounts_check CHECK (context_length >= 0 AND input_price >= 0 AND output_price >= 0);

UPDATE models SET capabilities = to_jsonb(array_remove(ARRAY[
    'chat',
    CASE WHEN supports_stream THEN 'streaming' END,
    CASE WHEN supports_funcs THEN 'functions' END,
    CASE WHEN supports_vision THEN 'vision' END,
    'completions'
], NULL));

COMMENT ON COLUMN models.input_price IS 'USD per 1,000,000 input tokens';
COMMENT ON COLUMN models.output_price IS 'USD per 1,000,000 output tokens';
COMMENT ON COLUMN models.capabilities IS 'JSON list of capability names (ghostllm.config.Capability)';

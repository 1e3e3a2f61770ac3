-- Routing for store models (issue 10), as a config model has it: deployments (a JSON list of
-- {provider, upstream_model, weight, input_price_per_1m, output_price_per_1m}; [] means the
-- single form, provider_id + upstream_model, which otherwise mirror the first deployment's),
-- strategy (priority | weighted | least-latency | least-busy | lowest-cost), fallbacks (a JSON
-- list of model ids tried in order when every deployment failed) and retries (NULL: the
-- gateway's routing.retries). Existing rows keep their meaning: one deployment, priority, no
-- fallbacks.

ALTER TABLE models ADD COLUMN deployments TEXT NOT NULL DEFAULT '[]';
ALTER TABLE models ADD COLUMN strategy TEXT NOT NULL DEFAULT 'priority';
ALTER TABLE models ADD COLUMN fallbacks TEXT NOT NULL DEFAULT '[]';
ALTER TABLE models ADD COLUMN retries INTEGER CHECK (retries IS NULL OR retries BETWEEN 0 AND 10);

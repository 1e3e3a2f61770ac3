-- Budgets on teams, users and API keys may reset: budget_period is 'daily', 'weekly' or
-- 'monthly', and NULL (every existing row) means the budget never resets. Only the period
-- is kept here; when a period starts, and how spend is counted within it, is the limits'.

ALTER TABLE teams
    ADD COLUMN budget_period TEXT CONSTRAINT teams_budget_period_check
        CHECK (budget_period IN ('daily', 'weekly', 'monthly'));
ALTER TABLE users
    ADD COLUMN budget_period TEXT CONSTRAINT users_budget_period_check
        CHECK (budget_period IN ('daily', 'weekly', 'monthly'));
ALTER TABLE api_keys
    ADD COLUMN budget_period TEXT CONSTRAINT api_keys_budget_period_check
        CHECK (budget_period IN ('daily', 'weekly', 'monthly'));

COMMENT ON COLUMN teams.budget_period IS 'daily | weekly | monthly: when the budget resets (NULL: never)';
COMMENT ON COLUMN users.budget_period IS 'daily | weekly | monthly: when the budget resets (NULL: never)';
COMMENT ON COLUMN api_keys.budget_period IS 'daily | weekly | monthly: when the budget resets (NULL: never)';

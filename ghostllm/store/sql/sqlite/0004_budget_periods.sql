-- Budgets on teams, users and API keys may reset: budget_period is 'daily', 'weekly' or
-- 'monthly', and NULL (every existing row) means the budget never resets. Only the period
-- is kept here; when a period starts, and how spend is counted within it, is the limits'.
--
-- SQLite adds a column with a CHECK in place (NULL passes it, so existing rows need no
-- rebuild).

ALTER TABLE teams ADD COLUMN budget_period TEXT CHECK (budget_period IN ('daily', 'weekly', 'monthly'));
ALTER TABLE users ADD COLUMN budget_period TEXT CHECK (budget_period IN ('daily', 'weekly', 'monthly'));
ALTER TABLE api_keys ADD COLUMN budget_period TEXT CHECK (budget_period IN ('daily', 'weekly', 'monthly'));

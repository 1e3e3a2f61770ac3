-- Routing (issue 10): which deployment ("<provider>/<upstream model>") served the request (the
-- last one tried when none did; NULL when no upstream was called), how many attempts were made
-- (retries and failovers included), and the key of each attempt in order, comma-joined. Rows
-- from before have NULLs.
ALTER TABLE usage_logs ADD COLUMN deployment TEXT;
ALTER TABLE usage_logs ADD COLUMN attempts INTEGER;
ALTER TABLE usage_logs ADD COLUMN deployments_tried TEXT;

-- When the current rate window began. A window whose reset time GitHub has not told us ends an
-- hour after it began, so answers without rate headers can never leave the budget spent for good.
ALTER TABLE rate_limit_state ADD COLUMN IF NOT EXISTS window_started_at TIMESTAMPTZ;

-- Rows written before had no reset after a window rolled over: their window ends an hour after
-- the last answer seen.
UPDATE rate_limit_state
   SET window_started_at = observed_at,
       reset_at = observed_at + interval '1 hour'
 WHERE reset_at IS NULL;

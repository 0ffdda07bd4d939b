-- Engage schema v9: what the worker's PostgreSQL-side checks read (docs/derived-state.md).
--
-- The schedule-index sweep reads `callbacks_pending_idx` (v1). The queue-view check needs the
-- services whose callbacks in or past the voice platform's hands changed lately: a partial
-- index over exactly those rows. A new callback (QUEUED or SCHEDULED, not yet submitted,
-- attempt 1) is not in it, so creates pay nothing for it; the updates that put rows into it
-- (submission, completion, retry) already change indexed columns.
CREATE INDEX callbacks_updated_idx ON callbacks (updated_at)
    WHERE state = 'COMPLETED' OR submitted_at IS NOT NULL OR attempt > 1;

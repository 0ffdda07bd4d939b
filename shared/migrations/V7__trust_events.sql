-- Engage schema v7: voice-platform events apply at most once per (callback, attempt, state).
--
-- `callback_events.attempt`: the dispatch attempt an event belongs to (NULL on rows written
-- before v7). The partial unique index makes a second application of one voice-platform state
-- for one attempt impossible, whatever the application code does (docs/voice-platform.md).
ALTER TABLE callback_events ADD COLUMN attempt smallint;

CREATE UNIQUE INDEX callback_events_ors_once_idx ON callback_events (callback_id, attempt, state)
    WHERE source = 'ors' AND attempt IS NOT NULL;

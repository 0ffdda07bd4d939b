-- A callback withdrawn because its request gave up (answered 503, or its client went away:
-- docs/bounded-answers.md) is marked on its row, so that the throttle re-seed leaves it out
-- without reading callback_events (docs/throttling.md). A constant default adds the column
-- without rewriting the table; earlier withdrawals are marked from their events, whatever
-- their age (a service window may be longer than a day).
ALTER TABLE callbacks ADD COLUMN withdrawn boolean NOT NULL DEFAULT false;
UPDATE callbacks SET withdrawn = true
 WHERE id IN (SELECT callback_id FROM callback_events WHERE source = 'compensation');

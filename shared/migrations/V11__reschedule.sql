-- Engage schema v11: reschedule (docs/voice-platform.md#reschedule).
--
-- A reschedule moves a callback that has not been handed off to a new time. A worker that
-- loaded the row before the reschedule committed may still try to hand off at the old time;
-- the reschedule fences that hand-off's dedupe key in the voice Redis before it commits and
-- bumps `handoff_epoch`, which is part of the dedupe key of every later hand-off of the
-- attempt (and `mark_submitted` marks only the epoch it was given). Epoch 0 keeps the dedupe
-- keys written before v11.
ALTER TABLE callbacks ADD COLUMN handoff_epoch smallint NOT NULL DEFAULT 0;

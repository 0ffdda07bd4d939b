-- Engage schema v3: what the worker needs beyond v1.
--
-- `expires_at`: when a submitted callback times out (submitted_at + the service's ttl_seconds);
-- the expiry pass reads it through `callbacks_active_idx`, which also lists what the queue views
-- (positionInQueue) must hold, so the reconciler rebuilds them from the same index.
-- `control_pending`: a control entry (cancel) is owed to the voice platform; set in the same
-- statement that cancels or expires a submitted callback and cleared once the entry is in the
-- control stream, so a failed control write is retried by the worker (outbox).
ALTER TABLE callbacks ADD COLUMN expires_at timestamptz;
ALTER TABLE callbacks ADD COLUMN control_pending boolean NOT NULL DEFAULT false;

CREATE INDEX callbacks_active_idx ON callbacks (expires_at)
    WHERE state IN ('QUEUED', 'ROUTING') AND submitted_at IS NOT NULL;
CREATE INDEX callbacks_control_idx ON callbacks (updated_at) WHERE control_pending;

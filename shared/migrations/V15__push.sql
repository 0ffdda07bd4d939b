-- Engage schema v15: the push outbox (docs/push.md#outbox).
--
-- One row per (callback, event, attempt, push target): `target` is the index into the
-- callback's `attrs.pushTargets`, so no device token is copied here. CALLBACK_UPCOMING rows
-- have attempt 0 (once per callback, whatever its attempts); CALLBACK_READY rows the attempt
-- whose ROUTING event owed them. The unique key makes every insert `ON CONFLICT DO NOTHING`,
-- so a watcher racing another, or a redelivered event, owes nothing twice.
CREATE TABLE push_outbox (
    id          bigserial PRIMARY KEY,
    callback_id uuid NOT NULL REFERENCES callbacks (id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    event       text NOT NULL CHECK (event IN ('CALLBACK_UPCOMING', 'CALLBACK_READY')),
    attempt     smallint NOT NULL,
    target      smallint NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'sent', 'failed', 'dropped')),
    tries       integer NOT NULL DEFAULT 0,
    due_at      timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz,
    last_error  text,
    UNIQUE (callback_id, event, attempt, target)
);
-- What the sender polls: only rows still to send.
CREATE INDEX push_outbox_due_idx ON push_outbox (due_at) WHERE status = 'pending';
-- What the watcher reads: callbacks in the voice platform's queue with push targets (few).
CREATE INDEX callbacks_push_watch_idx ON callbacks (submitted_at)
    WHERE state = 'QUEUED' AND submitted_at IS NOT NULL AND attrs ? 'pushTargets';

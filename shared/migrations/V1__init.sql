-- Engage schema v1: tenancy, services, callbacks (the source of truth; Redis is derived).

CREATE TABLE tenants (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored only as SHA-256 hashes; the key itself is shown once at creation.
CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash   bytea NOT NULL UNIQUE,
    label      text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- One row per callback service (CALLBACK_SETTINGS row). `settings` is the validated,
-- defaults-applied settings object including unknown columns; `version` counts changes.
CREATE TABLE services (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    settings   jsonb NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, name)
);

-- Callbacks. Optional create fields live in `attrs`; `user_data` is the filtered userData.
-- `dispatch_at` = when the worker submits it (desired time minus lead time, or creation time);
-- `submitted_at` is set once the current attempt is in the voice stream.
CREATE TABLE callbacks (
    id           uuid PRIMARY KEY,
    tenant_id    text NOT NULL,
    service      text NOT NULL,
    state        text NOT NULL CHECK (state IN ('SCHEDULED','QUEUED','ROUTING','PROCESSING','COMPLETED')),
    reason       text,
    phone_number text NOT NULL,
    desired_time timestamptz NOT NULL,
    dispatch_at  timestamptz NOT NULL,
    scheduled    boolean NOT NULL,
    priority     integer NOT NULL DEFAULT 0,
    attempt      smallint NOT NULL DEFAULT 1,
    submitted_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    attrs        jsonb,
    user_data    jsonb
);
-- What the schedule index must hold: rebuilt from this by the reconciler.
CREATE INDEX callbacks_pending_idx ON callbacks (dispatch_at)
    WHERE submitted_at IS NULL AND state IN ('SCHEDULED', 'QUEUED');
-- Retention purge (14 days after desired time) and per-service listings.
CREATE INDEX callbacks_desired_idx ON callbacks (desired_time);
CREATE INDEX callbacks_service_idx ON callbacks (tenant_id, service, phone_number)
    WHERE state <> 'COMPLETED';

-- Compact state history.
CREATE TABLE callback_events (
    callback_id uuid NOT NULL REFERENCES callbacks (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    state       text NOT NULL,
    reason      text,
    source      text NOT NULL
);
CREATE INDEX callback_events_callback_idx ON callback_events (callback_id, at);

-- Idempotency-Key of create (kept 24 h).
CREATE TABLE idempotency_keys (
    tenant_id    text NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    callback_id  uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

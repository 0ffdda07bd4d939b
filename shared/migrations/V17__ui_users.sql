-- Admin UI (docs/admin-ui.md): local users with an Argon2id password hash and one role, and
-- the server-side sessions every replica reads (PostgreSQL, so a session survives a Redis
-- flush and needs no second store). Sessions are keyed by the SHA-256 of the cookie value:
-- reading this table gives no usable cookie.
CREATE TABLE ui_users (
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    username      text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL
                  CHECK (role IN ('Administrator', 'Supervisor', 'Monitor', 'Developer')),
    failed_logins integer NOT NULL DEFAULT 0,
    locked_until  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, username)
);

-- `username` is empty for a session opened with the admin token (acting for `tenant_id`).
CREATE TABLE ui_sessions (
    id_hash    bytea PRIMARY KEY,
    tenant_id  text NOT NULL,
    username   text NOT NULL,
    role       text NOT NULL,
    csrf       text NOT NULL,
    last_seen  timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ui_sessions_user_idx ON ui_sessions (tenant_id, username);
CREATE INDEX ui_sessions_last_seen_idx ON ui_sessions (last_seen);

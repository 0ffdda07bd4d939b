-- V14: Click-To-Call-In (docs/call-in.md). Groups are versioned admin objects
-- (`call_in_groups.spec`: numbers, access codes, lifetime); `call_in_numbers` mirrors every
-- group's pool, one row per inbound number, so a number is pooled at most once across all
-- groups and tenants (its primary key) and the voice platform's match is unambiguous.
CREATE TABLE call_in_groups (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    spec       jsonb NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE call_in_numbers (
    number     text PRIMARY KEY,
    tenant_id  text NOT NULL,
    group_name text NOT NULL,
    FOREIGN KEY (tenant_id, group_name) REFERENCES call_in_groups (tenant_id, name)
        ON DELETE CASCADE
);

-- The pool follows the group's spec in the statement that writes it: a number already in
-- another group fails that statement (unique violation on call_in_numbers_pkey, a 409).
CREATE FUNCTION call_in_numbers_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM call_in_numbers WHERE tenant_id = NEW.tenant_id AND group_name = NEW.name;
    INSERT INTO call_in_numbers (number, tenant_id, group_name)
        SELECT n, NEW.tenant_id, NEW.name FROM jsonb_array_elements_text(NEW.spec -> 'numbers') AS n;
    RETURN NULL;
END
$$;

CREATE TRIGGER call_in_groups_numbers AFTER INSERT OR UPDATE ON call_in_groups
    FOR EACH ROW EXECUTE FUNCTION call_in_numbers_sync();

-- One row per request. `state`: live (handed out, not yet matched), consumed (matched once),
-- expired (freed after its expiry). No two live requests share a (number, code) pair: the
-- partial unique index is the proof (docs/call-in.md#uniqueness); a request past its
-- `expires_at` is flipped to expired before a pair is allocated, which frees it.
CREATE TABLE call_in_requests (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_name  text NOT NULL,
    to_number   text NOT NULL,
    access_code integer,
    from_number text,
    user_data   jsonb,
    callback_id uuid,
    state       text NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'consumed', 'expired')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    consumed_at timestamptz
);

CREATE UNIQUE INDEX call_in_requests_live_pair
    ON call_in_requests (to_number, (COALESCE(access_code, -1))) WHERE state = 'live';
-- The UI's listing (issue 17) and retention.
CREATE INDEX call_in_requests_tenant_idx ON call_in_requests (tenant_id, created_at);

-- Engage schema v10: optional HTTP Basic credentials of a tenant's GMS-compatible surface
-- (`/genesys/`, docs/gms.md#addressing-and-tenants). One pair per tenant; the password is
-- stored only as an Argon2id PHC string (salt and parameters inside), never in clear.
CREATE TABLE gms_credentials (
    tenant_id     text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    username      text NOT NULL,
    password_hash text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The `ContactCenterId` header is matched case-insensitively.
CREATE INDEX tenants_lower_id_idx ON tenants (lower(id));

-- Engage schema v13: per-tenant credentials of third parties (FCM service account, reCAPTCHA
-- secret, GWS OAuth client), one row per tenant and kind (docs/credentials.md). The secret part
-- is AES-256-GCM ciphertext under the key named by key_id (first 8 hex characters of the key's
-- SHA-256), sealed with the tenant id and kind as additional data; `public` holds only the
-- non-secret fields, shown on reads.
CREATE TABLE tenant_credentials (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('fcm', 'captcha', 'gws')),
    key_id     text NOT NULL,
    nonce      bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext bytea NOT NULL,
    public     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind)
);

-- Rotation finds the rows not under the current key.
CREATE INDEX tenant_credentials_key_idx ON tenant_credentials (key_id);

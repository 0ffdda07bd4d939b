-- V4: number rules, normalised numbers, throttle re-seeding, per-tenant CORS (issue 5).

-- Per-tenant number rules (DESIGN §6): services reference one by `number_rule`.
-- `rule` is the validated admin JSON {default_country, permitted_countries, blocked_patterns,
-- block_premium}; `version` counts changes (compiled rules are cached per version).
CREATE TABLE number_rules (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    rule       jsonb NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- The number normalised to E.164 without '+', next to the number as given; NULL when the
-- number did not normalise (no number rule and not a valid number: kept as given).
ALTER TABLE callbacks ADD COLUMN phone_e164 text;

-- Re-seeding the throttle state from the truth reads a service's recent creations.
CREATE INDEX callbacks_created_idx ON callbacks (tenant_id, service, created_at);

-- Browser origins allowed to call the public API with this tenant's keys (CORS).
ALTER TABLE tenants ADD COLUMN cors_origins text[] NOT NULL DEFAULT '{}';

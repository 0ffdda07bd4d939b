-- Recent failed API calls by correlation id, for the Developer tab (bounded by the writer's
-- pruning: newest 1000 per tenant, at most 7 days). Holds no request body or user data.
CREATE TABLE api_errors (
    corr_id    uuid PRIMARY KEY,
    tenant_id  text NOT NULL,
    method     text NOT NULL,
    route      text NOT NULL,
    status     smallint NOT NULL,
    message    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_errors_tenant_idx ON api_errors (tenant_id, created_at DESC);

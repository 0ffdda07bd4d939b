-- V16: the indexes of the admin callback API (docs/admin-queries.md#indexes): every listing,
-- export and bulk-cancel shape is an index range scan within the tenant, at 10 million rows.
--
-- - listing / export by desired time (any state, any of the other filters as index filters):
--   (tenant_id, desired_time, id), the keyset's order exactly, scanned either way;
-- - the same over live callbacks only (state filters without COMPLETED, bulk cancel by
--   filter and its dry-run count): the partial twin over `state <> 'COMPLETED'`, small
--   however many completed callbacks the retention window keeps;
-- - listing by creation time: (tenant_id, created_at, id) (V4's callbacks_created_idx leads
--   with the service);
-- - the phone filter, on the normalised number: (tenant_id, phone_e164) (a value that does not
--   normalise matches the number as given through V12's callbacks_tenant_phone_idx).
--
-- Not CONCURRENTLY: refinery runs each migration in a transaction, where CREATE INDEX
-- CONCURRENTLY is refused; each build here holds a SHARE lock on `callbacks`, so creates,
-- cancels and the worker's writes wait until all four are built (minutes on a table of
-- millions). IF NOT EXISTS: on a big table an operator builds them beforehand with
-- CREATE INDEX CONCURRENTLY (the statements of docs/admin-queries.md#indexes), and this
-- migration then finds them and changes nothing.
CREATE INDEX IF NOT EXISTS callbacks_admin_desired_idx
    ON callbacks (tenant_id, desired_time, id);
CREATE INDEX IF NOT EXISTS callbacks_admin_live_idx
    ON callbacks (tenant_id, desired_time, id) WHERE state <> 'COMPLETED';
CREATE INDEX IF NOT EXISTS callbacks_admin_created_idx
    ON callbacks (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS callbacks_tenant_e164_idx
    ON callbacks (tenant_id, phone_e164);

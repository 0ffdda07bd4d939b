-- V12: indexes of the GMS queries (docs/gms.md#queries).
-- Query by customer number (`_customer_number=…`), within the tenant, whatever the state
-- (callbacks_service_idx covers only live callbacks of one service).
CREATE INDEX IF NOT EXISTS callbacks_tenant_phone_idx ON callbacks (tenant_id, phone_number);
-- Query by state (`_callback_state=QUEUED`, `!COMPLETED` read as the other states), the admin
-- queue listing (states and a desired-time window) and the watermark counts.
-- Not CONCURRENTLY: refinery runs each migration in a transaction, where CREATE INDEX
-- CONCURRENTLY is refused; the build locks writes to `callbacks` while it runs. IF NOT EXISTS: an
-- operator may build both CONCURRENTLY beforehand (docs/gms.md#queries).
CREATE INDEX IF NOT EXISTS callbacks_tenant_state_idx ON callbacks (tenant_id, state, desired_time);

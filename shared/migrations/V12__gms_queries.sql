-- V12: the index of GMS queries by customer number (docs/gms.md#queries): `_customer_number=…`
-- within the tenant, whatever the state (callbacks_service_idx covers only live callbacks of
-- one service; it already serves the live-state filters, the queue listing and watermarks).
-- Not CONCURRENTLY: refinery runs each migration in a transaction, where CREATE INDEX
-- CONCURRENTLY is refused; the build locks writes to `callbacks` while it runs. IF NOT EXISTS:
-- an operator may build it CONCURRENTLY beforehand (docs/gms.md#queries).
CREATE INDEX IF NOT EXISTS callbacks_tenant_phone_idx ON callbacks (tenant_id, phone_number);

-- Engage schema v2: business hours, capacity rules, the slot capacity counter, and the slot a
-- scheduled callback holds (DESIGN §3, §6).

-- Business hours: `spec` is the validated admin JSON
-- ({"timezone", "weekly", "exceptions"}, DESIGN §6).
CREATE TABLE business_hours (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    spec       jsonb NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Capacity rules: `spec` is the validated admin JSON ({"slot_minutes", "weekly", "overrides"}).
CREATE TABLE capacity_rules (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    spec       jsonb NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- The atomic capacity counter: one row per (service, slot) that was ever booked. A booking does
-- `INSERT … ON CONFLICT DO UPDATE SET booked = booked + 1 WHERE booked < capacity` in the same
-- statement that inserts the callback, so a slot is never overbooked.
CREATE TABLE slot_bookings (
    tenant_id  text NOT NULL,
    service    text NOT NULL,
    slot_start timestamptz NOT NULL,
    booked     integer NOT NULL DEFAULT 0 CHECK (booked >= 0),
    PRIMARY KEY (tenant_id, service, slot_start)
);

-- The slot a scheduled callback holds (NULL when it holds none), so cancel frees exactly it.
ALTER TABLE callbacks ADD COLUMN slot_start timestamptz;

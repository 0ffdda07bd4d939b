-- Engage schema v6: slot counters that stay true when a service's slot grid changes
-- (docs/slot-grid.md).
--
-- A counter row is now one slot of one grid: its start AND its length. A callback records the
-- counter it holds (`slot_start`, `slot_minutes`) so cancel gives back exactly that place. When
-- the grid changes (another `slot_minutes`, or another business-hours zone), places held under
-- the old grid still count against the new one: a claim adds to its own counter the callbacks
-- held elsewhere whose desired time falls in its slot. Rows from before v6 have length 0
-- ("unknown", also the column default), which never equals a current grid, so their callbacks
-- are counted the same way.
ALTER TABLE slot_bookings ADD COLUMN slot_minutes smallint NOT NULL DEFAULT 0;
ALTER TABLE slot_bookings DROP CONSTRAINT slot_bookings_pkey;
ALTER TABLE slot_bookings ADD PRIMARY KEY (tenant_id, service, slot_start, slot_minutes);

-- NULL with a non-NULL slot_start: booked before v6 (its counter row has length 0).
ALTER TABLE callbacks ADD COLUMN slot_minutes smallint;

-- Callbacks holding a slot place, by desired time: what a claim counts when places of another
-- grid overlap its slot.
CREATE INDEX callbacks_slot_held_idx ON callbacks (tenant_id, service, desired_time)
    INCLUDE (slot_start, slot_minutes)
    WHERE slot_start IS NOT NULL AND reason IS DISTINCT FROM 'CANCELLED';

-- The worker's purge of counters of past days.
CREATE INDEX slot_bookings_start_idx ON slot_bookings (slot_start);

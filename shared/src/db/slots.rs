//! `slot_bookings`: the atomic per-slot capacity counter of scheduled callbacks.
//!
//! A booking claims its slot in the same statement that inserts the callback
//! (`db::callbacks::insert` with a [`SlotClaim`]):
//! `INSERT … ON CONFLICT DO UPDATE SET booked = booked + 1 WHERE booked < capacity`. PostgreSQL
//! locks the slot row and re-checks the condition against its latest version, so concurrent
//! bookings of one slot serialise on that row and a slot is never overbooked. Cancel gives the
//! slot back in the statement that completes the callback.
//!
//! A counter is one slot of one grid (start and length). When the grid changes, places held
//! under the old grid count against the new slot their callback's desired time falls in: the
//! claim adds them to its own counter, and [`window`] does the same for availability
//! (docs/slot-grid.md). Counters of past days are purged by the worker ([`purge_past`]).

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use jiff::Timestamp;

use crate::{
    error::Error,
    model::{
        Slot, SlotPlan,
        availability::{Availabilities, AvailabilityQuery, SlotOut},
        callback::wire_time,
    },
};

/// The slot a new scheduled callback takes, and the slot's configured capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotClaim {
    /// Start of the slot the desired time falls in, on the service's current grid
    /// (docs/slot-grid.md).
    pub start: Timestamp,
    /// Configured capacity (at least 1; a slot of capacity 0 is never claimed).
    pub capacity: u32,
    /// Slot length in minutes (the grid the counter belongs to).
    pub minutes: u16,
}

/// A place held in a counter: the counter's slot start and length (0: booked before v6).
type Counter = (Timestamp, i16);

/// Where a counter's slot ends (a counter from before v6, length 0, is taken as 60 minutes,
/// the longest slot).
fn counter_end((start, minutes): Counter) -> Timestamp {
    let minutes = if minutes > 0 { minutes } else { 60 };
    start
        .saturating_add(jiff::SignedDuration::from_mins(i64::from(minutes)))
        .unwrap_or(Timestamp::MAX)
}

/// Booked places per slot of `slots` (in time order, `minutes` long): each slot's own counter,
/// plus the places held under another grid whose callback's desired time falls in the slot.
/// One query, two when counters of another grid overlap the window.
async fn booked(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
    slots: &[Slot],
    minutes: u16,
) -> Result<Vec<u32>, Error> {
    let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
        return Ok(Vec::new());
    };
    let len = jiff::SignedDuration::from_mins(i64::from(minutes));
    let end = last.start.saturating_add(len).unwrap_or(Timestamp::MAX);
    let lookback = first
        .start
        .saturating_sub(jiff::SignedDuration::from_hours(1))
        .unwrap_or(first.start);
    let rows = super::stmt::query(
        db,
        "SELECT slot_start, slot_minutes, booked FROM slot_bookings
             WHERE tenant_id = $1 AND service = $2 AND slot_start > $3 AND slot_start < $4
               AND booked > 0",
        &[&tenant, &service, &lookback, &end],
    )
    .await?;
    let own_len = i16::try_from(minutes).unwrap_or(i16::MAX);
    let mut own: HashMap<Timestamp, u32> = HashMap::new();
    let mut foreign = false;
    for r in &rows {
        let key: Counter = (r.get(0), r.get(1));
        let n = r.get::<_, i32>(2).max(0).unsigned_abs();
        if key.1 == own_len && slots.binary_search_by_key(&key.0, |s| s.start).is_ok() {
            own.insert(key.0, n);
        } else if counter_end(key) > first.start {
            foreign = true;
        }
    }
    let mut out: Vec<u32> = slots
        .iter()
        .map(|s| own.get(&s.start).copied().unwrap_or(0))
        .collect();
    if foreign {
        for t in held_elsewhere(db, tenant, service, (first.start, end), slots, own_len).await? {
            let i = slots.partition_point(|s| s.start <= t);
            if let Some(n) = i.checked_sub(1).and_then(|i| out.get_mut(i)) {
                *n += 1;
            }
        }
    }
    Ok(out)
}

/// Desired times of the callbacks in `[from, to)` (within `slots`) holding a place in a
/// counter that is not one of `slots` (another grid): the same set the claim statement in
/// `db::callbacks` counts.
async fn held_elsewhere(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
    (from, to): (Timestamp, Timestamp),
    slots: &[Slot],
    minutes: i16,
) -> Result<Vec<Timestamp>, Error> {
    let rows = super::stmt::query(
        db,
        "SELECT desired_time, slot_start, coalesce(slot_minutes, 0::smallint) FROM callbacks
             WHERE tenant_id = $1 AND service = $2 AND desired_time >= $3 AND desired_time < $4
               AND slot_start IS NOT NULL AND reason IS DISTINCT FROM 'CANCELLED'",
        &[&tenant, &service, &from, &to],
    )
    .await?;
    Ok(rows
        .iter()
        .filter(|r| {
            let held: Counter = (r.get(1), r.get(2));
            held.1 != minutes || slots.binary_search_by_key(&held.0, |s| s.start).is_err()
        })
        .map(|r| r.get(0))
        .collect())
}

/// A slot with its remaining capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotState {
    /// The slot on the service's grid, with its configured capacity.
    pub slot: Slot,
    /// Capacity left (total minus booked, never negative).
    pub remaining: u32,
}

/// Every slot of the plan overlapping `[from, to)` with its remaining capacity (one query).
pub async fn window(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
    plan: &SlotPlan,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<SlotState>, Error> {
    let slots = plan.slots(from, to);
    let booked = booked(db, tenant, service, &slots, plan.slot_minutes()).await?;
    Ok(slots
        .into_iter()
        .zip(booked)
        .map(|(slot, booked)| SlotState {
            slot,
            remaining: slot.total.saturating_sub(booked),
        })
        .collect())
}

/// The bookable range of a service at `now`: slots ending after now and starting no later
/// than `max_days_ahead` days from now.
pub fn bookable(now: Timestamp, max_days_ahead: u16) -> (Timestamp, Timestamp) {
    let horizon = now
        .saturating_add(jiff::SignedDuration::from_hours(
            24 * i64::from(max_days_ahead),
        ))
        .unwrap_or(Timestamp::MAX);
    (now, horizon)
}

/// The part of an availability request's window whose slots are read: the window cut to what
/// is bookable at `now` (`None` when nothing of it is), or the instant `start` alone when the
/// request asks for the slot containing it (end = start). Pure, so the fuzz target
/// `availability_query` runs it (docs/fuzzing.md).
pub fn query_window(
    query: &AvailabilityQuery,
    now: Timestamp,
    max_days_ahead: u16,
) -> Option<(Timestamp, Timestamp)> {
    let (earliest, horizon) = bookable(now, max_days_ahead);
    if query.end <= query.start {
        return Some((query.start, query.start));
    }
    let (from, to) = (query.start.max(earliest), query.end.min(horizon));
    (from < to).then_some((from, to))
}

/// Answers an availability request: the open slots of the window that are still bookable,
/// with remaining capacity (full ones only with `reportBusy`), capped at `maxTimeSlots`.
pub async fn availability(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
    plan: &SlotPlan,
    max_days_ahead: u16,
    query: &AvailabilityQuery,
    now: Timestamp,
) -> Result<Availabilities, Error> {
    let (earliest, horizon) = bookable(now, max_days_ahead);
    let len = plan.slot_len();
    let states = match query_window(query, now, max_days_ahead) {
        None => Vec::new(),
        Some((from, to)) => window(db, tenant, service, plan, from, to).await?,
    };
    let limit = query.max_time_slots.unwrap_or(usize::MAX);
    let slots = states
        .into_iter()
        .filter(|s| {
            let end = s.slot.start.saturating_add(len).unwrap_or(Timestamp::MAX);
            s.slot.total > 0
                && end > earliest
                && s.slot.start <= horizon
                && (s.remaining > 0 || query.report_busy)
        })
        .take(limit)
        .map(|s| SlotOut {
            utc_time: wire_time(s.slot.start),
            local_time: query.zone.local_time(s.slot.start),
            capacity: s.remaining,
            total: s.slot.total,
        })
        .collect();
    Ok(Availabilities {
        slots,
        duration_min: plan.slot_minutes(),
        timezone: query.zone.name.clone(),
    })
}

/// How many alternatives a full-slot answer proposes.
pub const PROPOSALS: usize = 5;

/// How far from the requested time alternatives are searched.
const PROPOSAL_RANGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 7);

/// Why a slot refused a scheduled callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    /// Every place is booked (the claim found none left).
    Full,
    /// The slot takes no scheduled callbacks (capacity 0).
    Closed,
}

/// Where the alternatives to a refused slot are searched: the service's grid around the
/// desired time, within what is bookable at `now`.
#[derive(Debug, Clone, Copy)]
pub struct Alternatives<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Service name.
    pub service: &'a str,
    /// The service's slot grid, hours and capacities.
    pub plan: &'a SlotPlan,
    /// How many days ahead the service books (the search horizon).
    pub max_days_ahead: u16,
    /// The time the refused request asked for.
    pub desired: Timestamp,
    /// The request's time (nothing earlier is proposed).
    pub now: Timestamp,
}

impl Alternatives<'_> {
    /// The refusal of the slot starting `start`: [`Error::SlotFull`] with the nearest open
    /// slots, read on `db` (the caller's connection); a failed read is that failure instead.
    pub async fn refuse(
        &self,
        db: &impl GenericClient,
        start: Timestamp,
        why: SlotRefusal,
    ) -> Error {
        let (start, service) = (wire_time(start), self.service);
        let message = match why {
            SlotRefusal::Full => format!(
                "the slot starting {start} of service {service} is fully booked; data.slots proposes the nearest open slots"
            ),
            SlotRefusal::Closed => format!(
                "the slot starting {start} of service {service} takes no scheduled callbacks; data.slots proposes open slots"
            ),
        };
        match self.proposals(db).await {
            Ok(proposals) => Error::SlotFull { message, proposals },
            Err(e) => e,
        }
    }

    /// Up to [`PROPOSALS`] open slots with capacity left nearest to the desired time
    /// (bookable ones: starting at or after now, within the horizon), as a map from slot start
    /// (RFC 3339 UTC) to remaining capacity (string), in time order.
    pub async fn proposals(
        &self,
        db: &impl GenericClient,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        let (desired, plan) = (self.desired, self.plan);
        let (earliest, horizon) = bookable(self.now, self.max_days_ahead);
        let from = desired
            .saturating_sub(PROPOSAL_RANGE)
            .unwrap_or(desired)
            .max(earliest);
        let to = desired
            .saturating_add(PROPOSAL_RANGE)
            .unwrap_or(desired)
            .min(horizon);
        if to <= from {
            return Ok(serde_json::Map::new());
        }
        let mut open: Vec<SlotState> = window(db, self.tenant, self.service, plan, from, to)
            .await?
            .into_iter()
            .filter(|s| s.remaining > 0 && s.slot.start >= earliest && s.slot.start <= horizon)
            .collect();
        open.sort_by_key(|s| (s.slot.start.duration_since(desired).abs(), s.slot.start));
        open.truncate(PROPOSALS);
        open.sort_by_key(|s| s.slot.start);
        Ok(open
            .into_iter()
            .map(|s| {
                let remaining = serde_json::Value::String(s.remaining.to_string());
                (wire_time(s.slot.start), remaining)
            })
            .collect())
    }
}

/// Deletes up to `limit` counters of slots that started before `before` (the worker's
/// retention passes the start of yesterday: past slots are never booked again and cancel of a
/// past callback finds no counter, which is harmless). Returns how many went.
pub async fn purge_past(
    db: &impl GenericClient,
    before: Timestamp,
    limit: i64,
) -> Result<u64, Error> {
    Ok(super::stmt::execute(
        db,
        "DELETE FROM slot_bookings WHERE ctid IN (
                SELECT ctid FROM slot_bookings WHERE slot_start < $1 LIMIT $2)",
        &[&before, &limit],
    )
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_before_v6_are_taken_as_an_hour_long() {
        let t: Timestamp = "2030-01-01T12:00:00Z".parse().unwrap();
        let end = |m| counter_end((t, m)).to_string();
        assert_eq!(end(30), "2030-01-01T12:30:00Z");
        assert_eq!(end(0), "2030-01-01T13:00:00Z");
        assert_eq!(counter_end((Timestamp::MAX, 15)), Timestamp::MAX);
    }
}

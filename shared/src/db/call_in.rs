//! Click-To-Call-In in PostgreSQL (docs/call-in.md): the groups (a [`versioned`](super::versioned) kind whose
//! numbers the `call_in_numbers` table mirrors, one group per number), the allocation of a free
//! (number, code) pair, the voice platform's one-time match, and retention.
//!
//! No two live requests share a pair: the partial unique index `call_in_requests_live_pair`
//! refuses the second insert whatever the interleaving, so the allocation needs no lock and no
//! read-then-write: each try is one `INSERT … SELECT … ON CONFLICT DO NOTHING` that either takes
//! a pair or takes nothing.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    stmt,
    versioned::{Spec, Stored, kind},
};
use crate::{error::Result, model::call_in::GroupSpec};

kind! {
    /// The `call_in_groups` table (docs/call-in.md#groups), shown flat like business hours.
    pub CallInGroups: GroupSpec = Spec::new("call_in_groups", "spec", "Click-To-Call-In group")
}

/// A group as the admin API shows it.
pub type StoredGroup = Stored<CallInGroups>;

/// Whether the tenant has a callback with this id (any state).
pub async fn callback_exists(db: &impl GenericClient, tenant: &str, id: Uuid) -> Result<bool> {
    let row = stmt::query_opt(
        db,
        "SELECT 1 FROM callbacks WHERE tenant_id = $1 AND id = $2",
        &[&tenant, &id],
    )
    .await?;
    Ok(row.is_some())
}

/// A request to store, with the pool it draws from.
#[derive(Debug, Clone)]
pub struct Allocation<'a> {
    /// The new request's id.
    pub id: Uuid,
    /// The tenant.
    pub tenant: &'a str,
    /// The group's name.
    pub group: &'a str,
    /// The group's pool.
    pub numbers: &'a [String],
    /// The caller's number.
    pub from_number: Option<&'a str>,
    /// Filtered user data.
    pub user_data: Option<&'a Map<String, Value>>,
    /// The linked callback.
    pub callback_id: Option<Uuid>,
    /// Lifetime, seconds.
    pub lifetime_s: u32,
}

/// The pair a request got.
#[derive(Debug, Clone)]
pub struct Allocated {
    /// The number to dial.
    pub to_number: String,
    /// The code to key in, when the group issues codes.
    pub access_code: Option<i32>,
    /// When the pair is freed (the database's clock).
    pub expires_at: Timestamp,
}

/// Live requests of `numbers` past their expiry become `expired`, freeing their pairs.
pub async fn free_expired(db: &impl GenericClient, numbers: &[String]) -> Result<u64> {
    Ok(stmt::execute(
        db,
        "UPDATE call_in_requests SET state = 'expired'
          WHERE state = 'live' AND expires_at <= now() AND to_number = ANY($1)",
        &[&numbers],
    )
    .await?)
}

/// What one try of [`try_pair`] found.
#[derive(Debug)]
pub enum Try {
    /// The request is stored with this pair.
    Taken(Allocated),
    /// Every number already has a live request with this code (with codes off: every number
    /// is taken).
    NoneFree,
    /// A free number was seen but a concurrent request took it first: try again.
    Raced,
}

/// One atomic try: stores the request on a random number that has no live request with `code`
/// (`None`: codes off). The unique index decides races; nothing is read and then written.
pub async fn try_pair(
    db: &impl GenericClient,
    a: &Allocation<'_>,
    code: Option<i32>,
) -> Result<Try> {
    let user_data = a.user_data.map(|m| Value::Object(m.clone()));
    let lifetime = f64::from(a.lifetime_s);
    let row = stmt::query_one(
        db,
        "WITH cand AS (
             SELECT n FROM unnest($4::text[]) AS n
              WHERE NOT EXISTS (SELECT 1 FROM call_in_requests r
                                 WHERE r.state = 'live' AND r.to_number = n
                                   AND COALESCE(r.access_code, -1) = COALESCE($5::int, -1))
              ORDER BY random() LIMIT 1),
         ins AS (
             INSERT INTO call_in_requests (id, tenant_id, group_name, to_number, access_code,
                                           from_number, user_data, callback_id, expires_at)
             SELECT $1, $2, $3, cand.n, $5::int, $6, $7, $8, now() + make_interval(secs => $9)
               FROM cand
             ON CONFLICT DO NOTHING
             RETURNING to_number, expires_at)
         SELECT (SELECT count(*) FROM cand) AS free, ins.to_number, ins.expires_at
           FROM (SELECT 1) AS one LEFT JOIN ins ON true",
        &[
            &a.id,
            &a.tenant,
            &a.group,
            &a.numbers,
            &code,
            &a.from_number,
            &user_data,
            &a.callback_id,
            &lifetime,
        ],
    )
    .await?;
    let free: i64 = row.get(0);
    Ok(match row.get::<_, Option<String>>(1) {
        Some(to_number) => Try::Taken(Allocated {
            to_number,
            access_code: code,
            expires_at: row.get(2),
        }),
        None if free == 0 => Try::NoneFree,
        None => Try::Raced,
    })
}

/// Tries of one allocation: random codes drawn (codes on), or races lost (codes off).
const TRIES: usize = 16;

/// Stores the request on a free pair: a random number and, when `codes` is set, a random code
/// from it. `None` when no pair was free within `TRIES` tries (the group is exhausted, or
/// nearly: docs/call-in.md#allocation). Frees the pool's expired pairs first.
pub async fn allocate(
    db: &impl GenericClient,
    a: &Allocation<'_>,
    codes: Option<std::ops::RangeInclusive<i32>>,
) -> Result<Option<Allocated>> {
    use rand::Rng;
    free_expired(db, a.numbers).await?;
    for _ in 0..TRIES {
        let code = codes.clone().map(|r| rand::rng().random_range(r));
        match try_pair(db, a, code).await? {
            Try::Taken(got) => return Ok(Some(got)),
            // With codes off there is no other code to try.
            Try::NoneFree if code.is_none() => return Ok(None),
            Try::NoneFree | Try::Raced => {}
        }
    }
    Ok(None)
}

/// A live request the voice platform matched (and so consumed).
#[derive(Debug, Clone)]
pub struct Matched {
    /// The request's id.
    pub id: Uuid,
    /// Its tenant.
    pub tenant: String,
    /// Its group.
    pub group: String,
    /// The number dialled.
    pub to_number: String,
    /// The code keyed in.
    pub access_code: Option<i32>,
    /// The caller's number the request named.
    pub from_number: Option<String>,
    /// The request's user data.
    pub user_data: Option<Value>,
    /// The linked callback.
    pub callback_id: Option<Uuid>,
    /// When it would have expired.
    pub expires_at: Timestamp,
}

/// Consumes the live, unexpired request of `(to_number, code)` once; a request that named a
/// caller's number matches only that number. A second match finds it consumed: `None`.
pub async fn consume(
    db: &impl GenericClient,
    to_number: &str,
    code: Option<i32>,
    from_number: Option<&str>,
) -> Result<Option<Matched>> {
    let row = stmt::query_opt(
        db,
        "UPDATE call_in_requests SET state = 'consumed', consumed_at = now()
          WHERE state = 'live' AND expires_at > now() AND to_number = $1
            AND COALESCE(access_code, -1) = COALESCE($2::int, -1)
            AND (from_number IS NULL OR from_number = $3)
          RETURNING id, tenant_id, group_name, to_number, access_code, from_number, user_data,
                    callback_id, expires_at",
        &[&to_number, &code, &from_number],
    )
    .await?;
    Ok(row.map(|r| Matched {
        id: r.get(0),
        tenant: r.get(1),
        group: r.get(2),
        to_number: r.get(3),
        access_code: r.get(4),
        from_number: r.get(5),
        user_data: r.get(6),
        callback_id: r.get(7),
        expires_at: r.get(8),
    }))
}

/// Ends a request whose create gave up at its deadline after the insert was sent: nobody was
/// told its number, so it frees its pair at once (`expired`) instead of at its expiry.
pub async fn withdraw(db: &impl GenericClient, id: Uuid) -> Result<bool> {
    Ok(stmt::execute(
        db,
        "UPDATE call_in_requests SET state = 'expired' WHERE id = $1 AND state = 'live'",
        &[&id],
    )
    .await?
        > 0)
}

/// Gives back a request consumed by a match whose answer nobody received (the request gave up
/// at its deadline while the `UPDATE` was in flight): live again, so the voice platform's retry
/// matches it. Whether it was given back; not when the pair was taken again meanwhile (the
/// unique index refuses it) or it has expired.
pub async fn unconsume(db: &impl GenericClient, id: Uuid) -> Result<bool> {
    Ok(stmt::execute(
        db,
        "UPDATE call_in_requests SET state = 'live', consumed_at = NULL
          WHERE id = $1 AND state = 'consumed' AND expires_at > now()",
        &[&id],
    )
    .await?
        > 0)
}

/// Deletes up to `limit` requests that ended (consumed, or past their expiry) more than `days`
/// ago; returns how many.
pub async fn purge(db: &impl GenericClient, days: u32, limit: i64) -> Result<u64> {
    let days = f64::from(days);
    Ok(stmt::execute(
        db,
        "DELETE FROM call_in_requests WHERE id IN (
             SELECT id FROM call_in_requests
              WHERE COALESCE(consumed_at, expires_at) < now() - $1 * interval '1 day'
              LIMIT $2)",
        &[&days, &limit],
    )
    .await?)
}

/// One Click-To-Call-In request as the `/ges` UI's records view shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestRecord {
    /// The request's id.
    pub id: Uuid,
    /// Its group.
    pub group: String,
    /// The number handed out.
    pub to_number: String,
    /// The access code handed out, when the group uses codes.
    pub access_code: Option<i32>,
    /// The caller's number the request named.
    pub from_number: Option<String>,
    /// The linked callback.
    pub callback_id: Option<Uuid>,
    /// `live`, `consumed` or `expired` (a live request past its expiry shows as expired).
    pub state: String,
    /// When it was created, UTC wire time.
    pub created_at: String,
    /// When it expires (or expired), UTC wire time.
    pub expires_at: String,
}

/// The tenant's newest `limit` requests (live, consumed and expired, until retention deletes
/// them), newest first: the `(tenant_id, created_at)` index read backwards.
pub async fn recent(
    db: &impl GenericClient,
    tenant: &str,
    limit: i64,
) -> Result<Vec<RequestRecord>> {
    let rows = stmt::query(
        db,
        "SELECT id, group_name, to_number, access_code, from_number, callback_id,
                CASE WHEN state = 'live' AND expires_at <= now() THEN 'expired' ELSE state END,
                created_at, expires_at
           FROM call_in_requests WHERE tenant_id = $1
          ORDER BY created_at DESC LIMIT $2",
        &[&tenant, &limit],
    )
    .await?;
    let wire = crate::model::callback::wire_time;
    Ok(rows
        .iter()
        .map(|r| RequestRecord {
            id: r.get(0),
            group: r.get(1),
            to_number: r.get(2),
            access_code: r.get(3),
            from_number: r.get(4),
            callback_id: r.get(5),
            state: r.get(6),
            created_at: wire(r.get(7)),
            expires_at: wire(r.get(8)),
        })
        .collect())
}

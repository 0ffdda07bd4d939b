//! What the throttle state is re-seeded from (see `redis::throttle`): a service's active
//! callbacks and its recent creations.

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::{error::Error, redis::throttle::SeedEntry};

/// Most rows one seed reads per list (a service over it is logged; limits then undercount).
pub const SEED_ROW_CAP: i64 = 50_000;

/// The throttle number of a row: E.164 digits, else the digits of the number as given.
const NUMBER: &str = "coalesce(phone_e164, regexp_replace(phone_number, '[^0-9]', '', 'g'))";

/// Leaves out a callback whose withdrawal gave its reservation back (its Idempotency-Key
/// marked `given_back_at`, V20): until a replay admits it again, it is being withdrawn and
/// holds no place (docs/bounded-answers.md#a-replay-of-a-create-answered-503). A mark older than
/// the seed grace (`SEED_GRACE_MS`, 120 s) is not heeded: a withdrawal finishes within
/// seconds, and a mark that outlives it was left by a process that died before its withdrawal
/// committed, whose callback stays. The partial index on the marks makes this free when there
/// is none.
fn not_given_back() -> String {
    let grace_s = crate::redis::throttle::SEED_GRACE_MS / 1000;
    format!(
        "NOT EXISTS (SELECT 1 FROM idempotency_keys k
           WHERE k.given_back_at > now() - interval '{grace_s} seconds'
             AND k.tenant_id = c.tenant_id AND k.callback_id = c.id)"
    )
}

fn entry(r: &tokio_postgres::Row) -> SeedEntry {
    SeedEntry {
        id: r.get::<_, Uuid>(0),
        number: r.get(1),
        created_ms: r.get(2),
        immediate: !r.get::<_, bool>(3),
    }
}

/// Callbacks of the service that are not COMPLETED, except those being withdrawn
/// (`not_given_back`).
pub async fn active(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
) -> Result<Vec<SeedEntry>, Error> {
    let rows = db
        .query(
            &format!(
                "SELECT id, {NUMBER}, (extract(epoch FROM created_at) * 1000)::int8, scheduled
                 FROM callbacks c WHERE tenant_id = $1 AND service = $2 AND state <> 'COMPLETED'
                   AND {}
                 LIMIT $3",
                not_given_back()
            ),
            &[&tenant, &service, &SEED_ROW_CAP],
        )
        .await?;
    Ok(rows.iter().map(entry).collect())
}

/// Callbacks of the service created in the last `horizon_s` seconds, except those withdrawn
/// because their request gave up (503, or its client went away: `withdraw_unanswered` marks
/// them `withdrawn`) or being withdrawn (`not_given_back`): for the caller they were never
/// created, and their admission was given back.
pub async fn recent(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
    horizon_s: i64,
) -> Result<Vec<SeedEntry>, Error> {
    if horizon_s <= 0 {
        return Ok(Vec::new());
    }
    let horizon = horizon_s as f64;
    let rows = db
        .query(&recent_sql(), &[&tenant, &service, &horizon, &SEED_ROW_CAP])
        .await?;
    Ok(rows.iter().map(entry).collect())
}

/// The statement of [`recent`] (tenant, service, horizon in seconds as `float8`, row cap);
/// public so that its cost can be measured as it runs.
pub fn recent_sql() -> String {
    format!(
        "SELECT id, {NUMBER}, (extract(epoch FROM created_at) * 1000)::int8, scheduled
         FROM callbacks c WHERE tenant_id = $1 AND service = $2
           AND created_at > now() - make_interval(secs => $3) AND NOT withdrawn
           AND {}
         LIMIT $4",
        not_given_back()
    )
}

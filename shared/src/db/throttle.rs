//! What the throttle state is re-seeded from (see `redis::throttle`): a service's active
//! callbacks and its recent creations.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::{error::Error, redis::throttle::SeedEntry};

/// Most rows one seed reads per list (a service over it is logged; limits then undercount).
pub const SEED_ROW_CAP: i64 = 50_000;

/// The throttle number of a row: E.164 digits, else the digits of the number as given.
const NUMBER: &str = "coalesce(phone_e164, regexp_replace(phone_number, '[^0-9]', '', 'g'))";

/// Callbacks of `tenant` whose withdrawal gave their reservation back (their Idempotency-Key
/// marked `given_back_at`, V20) within the seed grace: until a replay admits one again, it is
/// being withdrawn and holds no place, and the seed leaves it out
/// (docs/bounded-answers.md#a-replay-of-a-create-answered-503). A mark older than the seed
/// grace (`SEED_GRACE_MS`, 120 s) is not heeded: a withdrawal finishes within seconds. Read
/// through the partial index on the marks (usually none), and applied to the lists in the
/// process: as a condition of their statements it tripled the re-seed of a service of 48,000
/// recent rows (69 -> 256 ms, `attack_s34c_reseed_filter_cost_with_a_long_history`).
async fn given_back(db: &impl GenericClient, tenant: &str) -> Result<HashSet<Uuid>, Error> {
    let grace_s = crate::redis::throttle::SEED_GRACE_MS as f64 / 1000.0;
    let rows = db
        .query(
            "SELECT callback_id FROM idempotency_keys
             WHERE tenant_id = $1 AND given_back_at > now() - make_interval(secs => $2)",
            &[&tenant, &grace_s],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The entries of `rows` except those [`given_back`] names.
async fn without_given_back(
    db: &impl GenericClient,
    tenant: &str,
    rows: &[tokio_postgres::Row],
) -> Result<Vec<SeedEntry>, Error> {
    let out = given_back(db, tenant).await?;
    Ok(rows
        .iter()
        .map(entry)
        .filter(|e| !out.contains(&e.id))
        .collect())
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
/// (`given_back`).
pub async fn active(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
) -> Result<Vec<SeedEntry>, Error> {
    let rows = db
        .query(
            &format!(
                "SELECT id, {NUMBER}, (extract(epoch FROM created_at) * 1000)::int8, scheduled
                 FROM callbacks WHERE tenant_id = $1 AND service = $2 AND state <> 'COMPLETED'
                 LIMIT $3"
            ),
            &[&tenant, &service, &SEED_ROW_CAP],
        )
        .await?;
    without_given_back(db, tenant, &rows).await
}

/// Callbacks of the service created in the last `horizon_s` seconds, except those withdrawn
/// because their request gave up (503, or its client went away: `withdraw_unanswered` marks
/// them `withdrawn`) or being withdrawn (`given_back`): for the caller they were never
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
    without_given_back(db, tenant, &rows).await
}

/// The statement of [`recent`] (tenant, service, horizon in seconds as `float8`, row cap);
/// public so that its cost can be measured as it runs.
pub fn recent_sql() -> String {
    format!(
        "SELECT id, {NUMBER}, (extract(epoch FROM created_at) * 1000)::int8, scheduled
         FROM callbacks WHERE tenant_id = $1 AND service = $2
           AND created_at > now() - make_interval(secs => $3) AND NOT withdrawn
         LIMIT $4"
    )
}

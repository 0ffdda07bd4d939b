//! The push outbox (`push_outbox`, docs/push.md#outbox): one row per (callback, event,
//! attempt, push target), inserted at most once (unique key, `ON CONFLICT DO NOTHING`) and sent
//! by the worker. `CALLBACK_UPCOMING` rows are written by the worker's watcher (attempt 0: once
//! per callback, whatever its attempts); `CALLBACK_READY` rows in the transaction that applies
//! a USERORIGINATED callback's ROUTING event (once per attempt). The worker claims due rows by
//! moving their due time past a lease (`FOR UPDATE SKIP LOCKED`: two workers never claim one
//! row), sends, and records the outcome; a row whose callback has moved on is dropped unsent.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde_json::Value;
use uuid::Uuid;

use crate::error::Error;

/// The push events Engage sends (docs/push.md#events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEvent {
    /// The callback's estimated wait dropped below the service's `push_threshold_minutes`.
    Upcoming,
    /// USERORIGINATED: the voice platform has an agent for the customer (ROUTING).
    Ready,
}

impl PushEvent {
    /// The stored and sent name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upcoming => "CALLBACK_UPCOMING",
            Self::Ready => "CALLBACK_READY",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CALLBACK_UPCOMING" => Some(Self::Upcoming),
            "CALLBACK_READY" => Some(Self::Ready),
            _ => None,
        }
    }
}

/// A waiting callback that may be owed its `CALLBACK_UPCOMING`.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The callback.
    pub id: Uuid,
    /// Its tenant.
    pub tenant: String,
    /// Its service.
    pub service: String,
    /// The service's settings (threshold, escalation).
    pub settings: Value,
    /// When it reached the voice platform (the watcher's order, with the id).
    pub submitted_at: Timestamp,
}

/// Where a watcher pass goes on from: after this (submitted time, id); `None`: from the start.
pub type WatchCursor = Option<(Timestamp, Uuid)>;

/// Callbacks the voice platform holds QUEUED that have push targets and no `CALLBACK_UPCOMING`
/// row yet (an index of exactly those rows: `callbacks_push_watch_idx`), at most `limit`, in
/// submission order after `after`. The watcher moves its cursor past each page and starts
/// over after a short one, so callbacks whose estimate stays above the threshold (or unknown)
/// never hide the others, however many they are (docs/push.md#outbox).
pub async fn watched(
    db: &impl GenericClient,
    after: WatchCursor,
    limit: i64,
) -> Result<Vec<Watched>, Error> {
    let (at, id) = (after.map(|a| a.0), after.map(|a| a.1));
    let rows = super::stmt::query(
        db,
        "SELECT c.id, c.tenant_id, c.service, s.settings, c.submitted_at
           FROM callbacks c
           JOIN services s ON s.tenant_id = c.tenant_id AND s.name = c.service
          WHERE c.state = 'QUEUED' AND c.submitted_at IS NOT NULL AND c.attrs ? 'pushTargets'
            AND ($2::timestamptz IS NULL OR (c.submitted_at, c.id) > ($2, $3::uuid))
            AND NOT EXISTS (SELECT 1 FROM push_outbox p
                             WHERE p.callback_id = c.id AND p.event = 'CALLBACK_UPCOMING')
          ORDER BY c.submitted_at, c.id
          LIMIT $1",
        &[&limit, &at, &id],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| Watched {
            id: r.get(0),
            tenant: r.get(1),
            service: r.get(2),
            settings: r.get(3),
            submitted_at: r.get(4),
        })
        .collect())
}

/// Owes `CALLBACK_UPCOMING` to every push target of a callback still QUEUED, with `data`
/// (extra message data). Returns the rows written (0: owed before, or no longer waiting).
pub async fn owe_upcoming(db: &impl GenericClient, id: Uuid, data: &Value) -> Result<u64, Error> {
    Ok(super::stmt::execute(
        db,
        "INSERT INTO push_outbox (callback_id, tenant_id, event, attempt, target, data)
         SELECT c.id, c.tenant_id, 'CALLBACK_UPCOMING', 0, (t.i - 1)::smallint, $2
           FROM callbacks c,
                jsonb_array_elements(c.attrs->'pushTargets') WITH ORDINALITY AS t(v, i)
          WHERE c.id = $1 AND c.state = 'QUEUED'
         ON CONFLICT DO NOTHING",
        &[&id, data],
    )
    .await?)
}

/// Owes `CALLBACK_READY` for the callback's current attempt to each of its push targets, when
/// its service is USERORIGINATED (called in the transaction applying its ROUTING event).
pub async fn owe_ready(db: &impl GenericClient, id: Uuid) -> Result<u64, Error> {
    Ok(super::stmt::execute(
        db,
        "INSERT INTO push_outbox (callback_id, tenant_id, event, attempt, target, data)
         SELECT c.id, c.tenant_id, 'CALLBACK_READY', c.attempt, (t.i - 1)::smallint, '{}'
           FROM callbacks c
           JOIN services s ON s.tenant_id = c.tenant_id AND s.name = c.service,
                jsonb_array_elements(c.attrs->'pushTargets') WITH ORDINALITY AS t(v, i)
          WHERE c.id = $1 AND s.settings->>'call_direction' = 'USERORIGINATED'
         ON CONFLICT DO NOTHING",
        &[&id],
    )
    .await?)
}

/// A claimed outbox row with what sending it needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Outbox row id.
    pub row: i64,
    /// The callback.
    pub callback: Uuid,
    /// Its tenant.
    pub tenant: String,
    /// Its service.
    pub service: String,
    /// Which event (unknown names are dropped).
    pub event: Option<PushEvent>,
    /// The callback attempt the row is for (0 for `CALLBACK_UPCOMING`).
    pub attempt: i16,
    /// Tries so far, this one included.
    pub tries: i32,
    /// Extra message data.
    pub data: Value,
    /// The callback's state now.
    pub state: String,
    /// The callback's attempt now.
    pub current_attempt: i16,
    /// The push target (`{channel, target}`), when the callback still has it.
    pub target: Option<Value>,
}

/// Claims up to `limit` due rows for `lease_ms` (their due time moves past it and their tries
/// count up), so no other worker takes them while this one sends; a worker that dies holding
/// them leaves them due again when the lease ends.
pub async fn claim(
    db: &impl GenericClient,
    limit: i64,
    lease_ms: f64,
) -> Result<Vec<Claimed>, Error> {
    let rows = super::stmt::query(
        db,
        "WITH due AS (
            SELECT id FROM push_outbox WHERE status = 'pending' AND due_at <= now()
             ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED
         ), claimed AS (
            UPDATE push_outbox p SET due_at = now() + make_interval(secs => $2::float8 / 1000.0),
                   tries = p.tries + 1
              FROM due WHERE p.id = due.id
            RETURNING p.id, p.callback_id, p.tenant_id, p.event, p.attempt, p.tries, p.data,
                      p.target
         )
         SELECT k.id, k.callback_id, k.tenant_id, c.service, k.event, k.attempt, k.tries, k.data,
                c.state, c.attempt, c.attrs->'pushTargets'->(k.target::int)
           FROM claimed k JOIN callbacks c ON c.id = k.callback_id",
        &[&limit, &lease_ms],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            row: r.get(0),
            callback: r.get(1),
            tenant: r.get(2),
            service: r.get(3),
            event: PushEvent::parse(r.get(4)),
            attempt: r.get(5),
            tries: r.get(6),
            data: r.get(7),
            state: r.get(8),
            current_attempt: r.get(9),
            target: r.get(10),
        })
        .collect())
}

/// How a claimed row ends, or when it is tried again.
#[derive(Debug, Clone)]
pub enum Settle {
    /// Delivered.
    Sent,
    /// Given up (FCM refused the message, or the tries ran out).
    Failed(String),
    /// Not sent and never will be: its callback completed or moved on.
    Dropped(&'static str),
    /// Due again after this many ms.
    Again(u64, String),
}

/// Records the outcome of one claimed row.
pub async fn settle(db: &impl GenericClient, row: i64, how: &Settle) -> Result<(), Error> {
    let (status, delay_ms, note): (&str, f64, Option<&str>) = match how {
        Settle::Sent => ("sent", 0.0, None),
        Settle::Failed(why) => ("failed", 0.0, Some(why)),
        Settle::Dropped(why) => ("dropped", 0.0, Some(why)),
        #[allow(clippy::cast_precision_loss)]
        Settle::Again(ms, why) => ("pending", *ms as f64, Some(why)),
    };
    super::stmt::execute(
        db,
        "UPDATE push_outbox SET status = $2, last_error = $3,
                due_at = CASE WHEN $2 = 'pending' THEN now() + make_interval(secs => $4::float8 / 1000.0)
                              ELSE due_at END,
                done_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END
          WHERE id = $1",
        &[&row, &status, &note, &delay_ms],
    )
    .await?;
    Ok(())
}

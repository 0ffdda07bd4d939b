//! Callbacks: insert (optionally idempotent), fetch, cancel.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    error::ApiError,
    model::{
        CallbackState, CompletionReason,
        callback::{Callback, wire_time},
    },
};

/// A validated callback ready to insert.
#[derive(Debug, Clone)]
pub struct NewCallback {
    /// Time-ordered id (UUIDv7).
    pub id: Uuid,
    /// Owning tenant.
    pub tenant: String,
    /// Service name.
    pub service: String,
    /// SCHEDULED (future desired time) or QUEUED (immediate).
    pub state: CallbackState,
    /// Number as given.
    pub phone_number: String,
    /// Normalised number, E.164 without `+` (`None`: did not normalise, dial as given).
    pub phone_e164: Option<String>,
    /// Desired time (creation time for immediate callbacks).
    pub desired_time: Timestamp,
    /// When the worker submits it.
    pub dispatch_at: Timestamp,
    /// Booked with a desired time.
    pub scheduled: bool,
    /// Initial priority.
    pub priority: i32,
    /// Optional attributes.
    pub attrs: Map<String, Value>,
    /// Filtered user data.
    pub user_data: Option<Map<String, Value>>,
}

const INSERT: &str = "INSERT INTO callbacks
    (id, tenant_id, service, state, phone_number, desired_time, dispatch_at, scheduled, priority, attrs, user_data, phone_e164)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

async fn insert_row(db: &impl GenericClient, cb: &NewCallback) -> Result<(), ApiError> {
    let attrs = (!cb.attrs.is_empty()).then(|| Value::Object(cb.attrs.clone()));
    let user_data = cb.user_data.clone().map(Value::Object);
    db.execute(
        INSERT,
        &[
            &cb.id,
            &cb.tenant,
            &cb.service,
            &cb.state.as_str(),
            &cb.phone_number,
            &cb.desired_time,
            &cb.dispatch_at,
            &cb.scheduled,
            &cb.priority,
            &attrs,
            &user_data,
            &cb.phone_e164,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts a callback (autocommit: durable when this returns).
pub async fn insert(db: &impl GenericClient, cb: &NewCallback) -> Result<(), ApiError> {
    insert_row(db, cb).await
}

/// Result of an idempotent insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    /// First use of the key: the callback was inserted.
    Created,
    /// The key was used before with the same body: that callback's id.
    Replayed(Uuid),
    /// The key was used before with a different body.
    Mismatch,
}

/// Inserts a callback under an `Idempotency-Key` (kept 24 h). Concurrent requests with one key
/// serialise on the key's primary-key index: the first commits, the others then see its row.
pub async fn insert_idempotent(
    client: &mut deadpool_postgres::Client,
    cb: &NewCallback,
    key: &str,
    request_hash: &[u8],
) -> Result<Idempotent, ApiError> {
    let tx = client.transaction().await?;
    if let Some(earlier) = claim_idempotency_key(&tx, cb, key, request_hash).await? {
        tx.rollback().await?;
        return Ok(earlier);
    }
    insert_row(&tx, cb).await?;
    tx.commit().await?;
    Ok(Idempotent::Created)
}

/// Claims `key` for `cb` inside the caller's transaction: `None` = claimed (insert `cb`, then
/// commit; rolling back frees the key), else the earlier use (`Replayed` or `Mismatch`).
/// A concurrent claim of the same key waits here until the first transaction ends.
pub async fn claim_idempotency_key(
    tx: &deadpool_postgres::Transaction<'_>,
    cb: &NewCallback,
    key: &str,
    request_hash: &[u8],
) -> Result<Option<Idempotent>, ApiError> {
    let claimed = tx
        .query_opt(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, callback_id)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, key) DO UPDATE
                SET request_hash = EXCLUDED.request_hash, callback_id = EXCLUDED.callback_id,
                    created_at = now()
                WHERE idempotency_keys.created_at < now() - interval '24 hours'
             RETURNING 1",
            &[&cb.tenant, &key, &request_hash, &cb.id],
        )
        .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let row = tx
        .query_one(
            "SELECT request_hash, callback_id FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
            &[&cb.tenant, &key],
        )
        .await?;
    let (hash, id): (Vec<u8>, Uuid) = (row.get(0), row.get(1));
    Ok(Some(if hash == request_hash {
        Idempotent::Replayed(id)
    } else {
        Idempotent::Mismatch
    }))
}

/// A stored callback.
#[derive(Debug, Clone)]
pub struct StoredCallback {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant: String,
    /// Service.
    pub service: String,
    /// State.
    pub state: CallbackState,
    /// Completion reason.
    pub reason: Option<CompletionReason>,
    /// Number as given.
    pub phone_number: String,
    /// Normalised number, E.164 without `+` (`None`: dial as given).
    pub phone_e164: Option<String>,
    /// Desired time.
    pub desired_time: Timestamp,
    /// Dispatch time.
    pub dispatch_at: Timestamp,
    /// Current attempt.
    pub attempt: i16,
    /// When the current attempt reached the voice stream.
    pub submitted_at: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Optional attributes.
    pub attrs: Map<String, Value>,
    /// User data.
    pub user_data: Option<Value>,
}

impl StoredCallback {
    fn from_row(r: &tokio_postgres::Row) -> Result<Self, ApiError> {
        let state: String = r.get("state");
        let reason: Option<String> = r.get("reason");
        let attrs = match r.get::<_, Option<Value>>("attrs") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Ok(Self {
            id: r.get("id"),
            tenant: r.get("tenant_id"),
            service: r.get("service"),
            state: CallbackState::parse(&state)
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("bad state {state}")))?,
            reason: reason.as_deref().and_then(CompletionReason::parse),
            phone_number: r.get("phone_number"),
            phone_e164: r.get("phone_e164"),
            desired_time: r.get("desired_time"),
            dispatch_at: r.get("dispatch_at"),
            attempt: r.get("attempt"),
            submitted_at: r.get("submitted_at"),
            created_at: r.get("created_at"),
            attrs,
            user_data: r.get("user_data"),
        })
    }

    /// The API model (queue position and EWT are filled in by the caller when known).
    pub fn to_model(&self) -> Callback {
        Callback {
            id: self.id.to_string(),
            service_name: self.service.clone(),
            desired_time: wire_time(self.desired_time),
            callback_state: self.state,
            callback_reason: self
                .reason
                .filter(|_| self.state == CallbackState::Completed),
            phone_number: self.phone_number.clone(),
            position_in_queue: None,
            estimated_wait_time: None,
            attempt: self.attempt,
            created_time: wire_time(self.created_at),
            attrs: self.attrs.clone(),
            user_data: self.user_data.clone(),
        }
    }
}

const COLUMNS: &str =
    "id, tenant_id, service, state, reason, phone_number, phone_e164, desired_time, dispatch_at,
    attempt, submitted_at, created_at, attrs, user_data";

/// One callback of the tenant, or 404 (another tenant's id is 404 too: invariant 5).
pub async fn get(
    db: &impl GenericClient,
    tenant: &str,
    id: Uuid,
) -> Result<StoredCallback, ApiError> {
    let row = db
        .query_opt(
            &format!("SELECT {COLUMNS} FROM callbacks WHERE id = $1 AND tenant_id = $2"),
            &[&id, &tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no callback {id}")))?;
    StoredCallback::from_row(&row)
}

/// What a successful cancel changed.
#[derive(Debug, Clone)]
pub struct Cancelled {
    /// The current attempt had reached the voice stream (a control entry is due).
    pub submitted: bool,
    /// The attempt number.
    pub attempt: i16,
    /// The callback's service (to release its throttle place).
    pub service: String,
}

/// Cancels a callback: allowed in every state but PROCESSING and COMPLETED (DESIGN §4).
pub async fn cancel(
    db: &impl GenericClient,
    tenant: &str,
    id: Uuid,
) -> Result<Cancelled, ApiError> {
    let row = db
        .query_opt(
            "WITH c AS (
                UPDATE callbacks SET state = 'COMPLETED', reason = 'CANCELLED', updated_at = now()
                WHERE id = $1 AND tenant_id = $2 AND state NOT IN ('PROCESSING', 'COMPLETED')
                RETURNING id, submitted_at, attempt, service
             ), e AS (
                INSERT INTO callback_events (callback_id, state, reason, source)
                SELECT id, 'COMPLETED', 'CANCELLED', 'api' FROM c
             )
             SELECT submitted_at IS NOT NULL, attempt, service FROM c",
            &[&id, &tenant],
        )
        .await?;
    if let Some(row) = row {
        return Ok(Cancelled {
            submitted: row.get(0),
            attempt: row.get(1),
            service: row.get(2),
        });
    }
    let current = get(db, tenant, id).await?;
    Err(match current.state {
        CallbackState::Processing => ApiError::bad_request(
            "callback is being handled by an agent (PROCESSING) and cannot be cancelled",
        ),
        _ => ApiError::bad_request(format!(
            "callback already completed ({})",
            current
                .reason
                .map_or("NOT_AVAILABLE", CompletionReason::as_str)
        )),
    })
}

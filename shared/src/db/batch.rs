//! Group commit for callback inserts. Concurrent creates hand their row to one batcher, which
//! writes whatever is queued as a single multi-row `INSERT` (one transaction, one WAL flush),
//! then puts the committed rows into the schedule index in one Redis round trip per shard, and
//! answers every waiter. At low load a batch is one row and nothing waits for a batch to fill;
//! under load, rows queue while earlier batches are in flight, so commits and index writes are
//! shared. Durability is unchanged: a caller is answered only after its row is committed. An
//! index write that fails is counted and logged, and the worker's reconciler indexes the rows
//! from PostgreSQL (the create still succeeds).

use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::callbacks::NewCallback;
use crate::{
    error::ApiError,
    redis::{Keys, RedisHandle, schedule},
};

type Job = (NewCallback, oneshot::Sender<Result<(), ApiError>>);

/// Most rows in one statement.
const MAX_BATCH: usize = 128;

/// Handle on the batcher task (cheap to clone).
#[derive(Debug, Clone)]
pub struct InsertBatcher {
    /// `None` outside a runtime (tools): inserts then go straight to the database.
    tx: Option<mpsc::Sender<Job>>,
    pool: Pool,
    index: Index,
}

/// Where committed rows are indexed.
#[derive(Clone)]
struct Index {
    redis: RedisHandle,
    keys: Keys,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("keys", &self.keys).finish()
    }
}

impl InsertBatcher {
    /// Starts the batcher with at most `in_flight` statements running at once; committed rows
    /// go into the schedule index of `redis`.
    pub fn spawn(pool: Pool, in_flight: usize, redis: RedisHandle, keys: Keys) -> Self {
        let index = Index { redis, keys };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Self {
                tx: None,
                pool,
                index,
            };
        };
        let (tx, rx) = mpsc::channel(4096);
        rt.spawn(run(pool.clone(), index.clone(), rx, in_flight.max(1)));
        Self {
            tx: Some(tx),
            pool,
            index,
        }
    }

    /// Inserts one callback and indexes it for dispatch; returns once it is committed.
    pub async fn insert(&self, cb: NewCallback) -> Result<(), ApiError> {
        let Some(tx) = &self.tx else {
            let client = self.pool.get().await?;
            insert_rows(&client, std::slice::from_ref(&cb)).await?;
            self.index.rows(std::slice::from_ref(&cb)).await;
            return Ok(());
        };
        let (done, wait) = oneshot::channel();
        tx.send((cb, done))
            .await
            .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
        wait.await
            .map_err(|_| ApiError::Unavailable("shutting down".into()))?
    }
}

impl Index {
    /// Indexes committed rows (failures counted and logged, see [`schedule::index_committed`]).
    async fn rows(&self, rows: &[NewCallback]) {
        let entries: Vec<_> = rows
            .iter()
            .map(|c| (c.id, c.dispatch_at.as_millisecond()))
            .collect();
        schedule::index_committed(&self.redis, &self.keys, &entries).await;
    }
}

async fn run(pool: Pool, index: Index, mut rx: mpsc::Receiver<Job>, in_flight: usize) {
    let permits = std::sync::Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return; // every sender dropped
        }
        let (pool, index) = (pool.clone(), index.clone());
        tokio::spawn(async move {
            write(&pool, &index, jobs).await;
            drop(permit);
        });
    }
}

async fn write(pool: &Pool, index: &Index, jobs: Vec<Job>) {
    let (rows, waiters): (Vec<NewCallback>, Vec<_>) = jobs.into_iter().unzip();
    let result = match pool.get().await {
        Ok(client) => insert_rows(&client, &rows).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => {
            index.rows(&rows).await;
            waiters.into_iter().for_each(|w| drop(w.send(Ok(()))));
        }
        Err(ApiError::Unavailable(m)) => {
            waiters
                .into_iter()
                .for_each(|w| drop(w.send(Err(ApiError::Unavailable(m.clone())))));
        }
        // Anything else: retry row by row so one bad row cannot fail its neighbours.
        Err(_) => {
            for (row, w) in rows.into_iter().zip(waiters) {
                let res = match pool.get().await {
                    Ok(client) => insert_rows(&client, std::slice::from_ref(&row)).await,
                    Err(e) => Err(e.into()),
                };
                if res.is_ok() {
                    index.rows(std::slice::from_ref(&row)).await;
                }
                let _ = w.send(res);
            }
        }
    }
}

/// One multi-row insert (autocommit).
pub(crate) async fn insert_rows(
    db: &impl deadpool_postgres::GenericClient,
    rows: &[NewCallback],
) -> Result<(), ApiError> {
    let ids: Vec<_> = rows.iter().map(|c| c.id).collect();
    let tenants: Vec<&str> = rows.iter().map(|c| c.tenant.as_str()).collect();
    let services: Vec<&str> = rows.iter().map(|c| c.service.as_str()).collect();
    let states: Vec<&str> = rows.iter().map(|c| c.state.as_str()).collect();
    let phones: Vec<&str> = rows.iter().map(|c| c.phone_number.as_str()).collect();
    let desired: Vec<_> = rows.iter().map(|c| c.desired_time).collect();
    let dispatch: Vec<_> = rows.iter().map(|c| c.dispatch_at).collect();
    let scheduled: Vec<bool> = rows.iter().map(|c| c.scheduled).collect();
    let priority: Vec<i32> = rows.iter().map(|c| c.priority).collect();
    let attrs: Vec<Option<Value>> = rows
        .iter()
        .map(|c| (!c.attrs.is_empty()).then(|| Value::Object(c.attrs.clone())))
        .collect();
    let user_data: Vec<Option<Value>> = rows
        .iter()
        .map(|c| c.user_data.clone().map(Value::Object))
        .collect();
    let e164: Vec<Option<&str>> = rows.iter().map(|c| c.phone_e164.as_deref()).collect();
    super::stmt::execute(db,
        "INSERT INTO callbacks
            (id, tenant_id, service, state, phone_number, desired_time, dispatch_at, scheduled, priority,
             attrs, user_data, phone_e164)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                              $7::timestamptz[], $8::bool[], $9::int4[], $10::jsonb[], $11::jsonb[], $12::text[])",
        &[
            &ids, &tenants, &services, &states, &phones, &desired, &dispatch, &scheduled, &priority,
            &attrs, &user_data, &e164,
        ],
    )
    .await?;
    Ok(())
}

//! Group commit for callback inserts. Concurrent creates hand their row to one batcher, which
//! writes whatever is queued as a single multi-row `INSERT` (one transaction, one WAL flush),
//! then puts the committed rows into the schedule index in one Redis round trip per shard, and
//! answers every waiter. At low load a batch is one row and nothing waits for a batch to fill;
//! under load, rows queue while earlier batches are in flight, so commits and index writes are
//! shared. Durability is unchanged: a caller is answered only after its row is committed. An
//! index write that fails is counted and logged, and the worker's reconciler indexes the rows
//! from PostgreSQL (the create still succeeds).
//!
//! Bounded answers (docs/bounded-answers.md): each row travels with the [`Writer`] side of its
//! request's wait. Rows whose request already gave up are left out of the statement; a batch
//! whose connection broke mid-statement is resolved on a fresh connection
//! ([`outcome::resolve_stored`]); committed rows whose request gave up meanwhile are deleted
//! again ([`outcome::compensate`]) instead of being indexed.
//!
//! One clock (docs/bounded-answers.md): an immediate callback's desired and dispatch times are
//! PostgreSQL's `now()`, a scheduled one is never due before it; the index gets the stored
//! time back (`RETURNING`), so the API host's clock does not delay dispatch.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Instant,
};

use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use super::{
    callbacks::NewCallback,
    outcome::{self, UndoUnlessStored, Waited, Writer},
};
use crate::{
    error::Error,
    redis::{
        Keys, RedisHandle,
        schedule::{self, Due},
    },
};

/// What the batcher answers a create: `Ok` = committed (and indexed).
pub type Answer = Result<(), Error>;

type Job = (NewCallback, Writer<Answer>);

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

    /// Inserts one callback and indexes it for dispatch; returns once it is committed, or once
    /// `deadline` passed (then 503, and the row is never stored or is deleted again). `undo`
    /// runs whenever the row is not kept: a failure answered, and also this future dropped
    /// before the end (the request's client went away), when the row is then left out or
    /// deleted again ([`UndoUnlessStored`]).
    pub async fn insert(
        &self,
        cb: NewCallback,
        deadline: Option<tokio::time::Instant>,
        undo: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<(), Error> {
        let mut guard = UndoUnlessStored::new(undo);
        let Some(tx) = &self.tx else {
            let client = self.pool.get().await?;
            let since = Instant::now();
            let stored = insert_rows(&client, std::slice::from_ref(&cb)).await?;
            guard.stored();
            let entries: Vec<_> = stored
                .iter()
                .filter(|(_, due)| !due.beyond_horizon(&self.index.keys, since))
                .map(|(id, due)| due.entry(*id))
                .collect();
            schedule::index_committed(&self.index.redis, &self.index.keys, &entries).await;
            return Ok(());
        };
        let (writer, waiter) = outcome::pair();
        guard.watch(&waiter);
        tx.send((cb, writer))
            .await
            .map_err(|_| Error::unavailable("shutting down"))?;
        match waiter.wait(deadline).await {
            Waited::Done(answer) => answer,
            // Settled as stored: only the index write is late.
            Waited::DoneLate { stored: true } => Ok(()),
            Waited::DoneLate { stored: false } => Err(not_confirmed()),
            Waited::Abandoned | Waited::InDoubt => Err(not_confirmed()),
        }
    }
}

/// The 503 of a create that PostgreSQL did not confirm in time (nothing is left stored).
pub fn not_confirmed() -> Error {
    Error::unavailable(
        "the database did not confirm the callback in time; nothing was stored, retry later",
    )
}

impl Index {
    /// Indexes committed rows (failures counted and logged, see [`schedule::index_committed`])
    /// and answers their writers, shard by shard and all shards at once: a create waits only
    /// for the index write of its own shard, so a slow or frozen cluster node delays only the
    /// creates of its shards, also in a batch shared with others (docs/derived-state.md#a-failing-shard).
    /// Callbacks due beyond the horizon are answered at once and left to the worker's horizon
    /// loader (docs/derived-state.md#the-horizon); `since` is when their insert began.
    async fn answer_by_shard(&self, keep: Vec<(Writer<Answer>, (Uuid, Due))>, since: Instant) {
        let mut by_shard: BTreeMap<u16, Vec<_>> = BTreeMap::new();
        for (w, (id, due)) in keep {
            if due.beyond_horizon(&self.keys, since) {
                w.send(Ok(()));
                continue;
            }
            let shard = self.keys.shard_of(&id);
            by_shard.entry(shard).or_default().push((w, due.entry(id)));
        }
        let shards = by_shard.into_values().map(|group| async move {
            let entries: Vec<_> = group.iter().map(|(_, e)| *e).collect();
            schedule::index_committed(&self.redis, &self.keys, &entries).await;
            group.into_iter().for_each(|(w, _)| w.send(Ok(())));
        });
        futures::future::join_all(shards).await;
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
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            let e = Error::from(e);
            jobs.into_iter()
                .for_each(|(_, w)| fail(w, clone_unavailable(&e)));
            return;
        }
    };
    // Rows whose request gave up while queued are not written at all.
    let (rows, writers): (Vec<NewCallback>, Vec<_>) =
        jobs.into_iter().filter(|(_, w)| w.begin_commit()).unzip();
    if rows.is_empty() {
        return;
    }
    let since = Instant::now();
    // The batch's connection goes back to the pool before `committed` runs: withdrawing rows
    // whose request gave up takes a connection of the same pool, and with `DB_POOL_SIZE` at
    // most `DB_BATCH_IN_FLIGHT` every connection could be a batch's waiting for another
    // (attack_s41b).
    match insert_raw(&client, &rows).await {
        Ok(stored) => {
            drop(client);
            committed(pool, index, rows, writers, stored, since).await;
        }
        Err(e) if outcome::in_doubt(&e) => {
            drop(client);
            tracing::warn!(count = rows.len(), error = %e, "batch insert outcome unknown; resolving");
            let stored = outcome::resolve_stored(pool, &rows).await;
            let (mut done, mut lost) = (Vec::new(), Vec::new());
            for (row, w) in rows.into_iter().zip(writers) {
                if stored.contains(&row.id) {
                    done.push((row, w));
                } else {
                    lost.push(w);
                }
            }
            lost.into_iter().for_each(|w| fail(w, not_stored()));
            let (rows, writers): (Vec<_>, Vec<_>) = done.into_iter().unzip();
            // Indexed as due at once: the worker re-reads each row and moves a scheduled
            // callback to its stored time.
            let times = rows.iter().map(|r| (r.id, Due::UNKNOWN)).collect();
            committed(pool, index, rows, writers, times, since).await;
        }
        // Anything else: retry row by row so one bad row cannot fail its neighbours.
        // The stored ones are answered once the connection is back in the pool.
        Err(_) => {
            let mut stored = Vec::new();
            for (row, w) in rows.into_iter().zip(writers) {
                let since = Instant::now();
                match insert_rows(&client, std::slice::from_ref(&row)).await {
                    Ok(at) => stored.push((row, w, at, since)),
                    Err(e) => fail(w, e),
                }
            }
            drop(client);
            for (row, w, at, since) in stored {
                committed(pool, index, vec![row], vec![w], at, since).await;
            }
        }
    }
}

/// Answers the writers of committed rows; rows whose request gave up meanwhile are deleted
/// instead of indexed. `since`: when their insert began.
async fn committed(
    pool: &Pool,
    index: &Index,
    rows: Vec<NewCallback>,
    writers: Vec<Writer<Answer>>,
    stored: Vec<(Uuid, Due)>,
    since: Instant,
) {
    let times: HashMap<Uuid, Due> = stored.into_iter().collect();
    let mut keep = Vec::with_capacity(rows.len());
    let mut undo: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for (row, w) in rows.iter().zip(writers) {
        if w.settle(true) {
            let at = times.get(&row.id).copied().unwrap_or(Due::UNKNOWN);
            keep.push((w, (row.id, at)));
        } else {
            undo.entry(row.tenant.as_str()).or_default().push(row.id);
        }
    }
    for (tenant, ids) in undo {
        outcome::compensate(pool, tenant, &ids).await;
    }
    index.answer_by_shard(keep, since).await;
}

fn fail(w: Writer<Answer>, e: Error) {
    if w.settle(false) {
        w.send(Err(e));
    }
}

fn not_stored() -> Error {
    Error::unavailable("database connection lost; nothing was stored, retry later")
}

fn clone_unavailable(e: &Error) -> Error {
    match e {
        Error::Unavailable { message, cause } => Error::Unavailable {
            message: message.clone(),
            cause: cause.clone(),
        },
        _ => Error::unavailable("database unavailable, retry later"),
    }
}

/// The columns of a callback insert, built from `$1`…`$12` arrays. An immediate callback's
/// desired and dispatch times are the database's `now()`; a scheduled one is not due before
/// `now()` either (one clock: docs/bounded-answers.md).
const INSERT_ROWS: &str = "INSERT INTO callbacks
        (id, tenant_id, service, state, phone_number, desired_time, dispatch_at, scheduled,
         priority, attrs, user_data, phone_e164)
     SELECT u.id, u.tenant, u.service, u.state, u.phone,
            CASE WHEN u.scheduled THEN u.desired ELSE now() END,
            CASE WHEN u.scheduled THEN greatest(u.dispatch, now()) ELSE now() END,
            u.scheduled, u.priority, u.attrs, u.user_data, u.e164
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                 $7::timestamptz[], $8::bool[], $9::int4[], $10::jsonb[], $11::jsonb[], $12::text[])
          AS u(id, tenant, service, state, phone, desired, dispatch, scheduled, priority, attrs,
               user_data, e164)";

/// One multi-row insert (autocommit); returns each row's stored dispatch time.
pub(crate) async fn insert_rows(
    db: &impl deadpool_postgres::GenericClient,
    rows: &[NewCallback],
) -> Result<Vec<(Uuid, Due)>, Error> {
    Ok(insert_raw(db, rows).await?)
}

async fn insert_raw(
    db: &impl deadpool_postgres::GenericClient,
    rows: &[NewCallback],
) -> Result<Vec<(Uuid, Due)>, tokio_postgres::Error> {
    let sql = format!("{INSERT_ROWS} RETURNING id, dispatch_at, statement_timestamp()");
    let found = run_insert(db, &sql, rows).await?;
    Ok(found
        .iter()
        .map(|r| {
            let due = Due {
                at: r.get(1),
                db_now: r.get(2),
            };
            (r.get(0), due)
        })
        .collect())
}

/// Inserts `rows` again, skipping ids already stored; returns the ids it inserted (the
/// caller's transaction is rolled back: see [`outcome::resolve_stored`]).
pub(crate) async fn probe_rows(
    db: &impl deadpool_postgres::GenericClient,
    rows: &[NewCallback],
) -> Result<HashSet<Uuid>, Error> {
    let sql = format!("{INSERT_ROWS} ON CONFLICT (id) DO NOTHING RETURNING id");
    let found = run_insert(db, &sql, rows).await?;
    Ok(found.iter().map(|r| r.get(0)).collect())
}

async fn run_insert(
    db: &impl deadpool_postgres::GenericClient,
    sql: &str,
    rows: &[NewCallback],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let ids: Vec<_> = rows.iter().map(|c| c.id).collect();
    let tenants: Vec<&str> = rows.iter().map(|c| c.tenant.as_str()).collect();
    let services: Vec<&str> = rows.iter().map(|c| c.service.as_str()).collect();
    let states: Vec<&str> = rows.iter().map(|c| c.admission.state().as_str()).collect();
    let phones: Vec<&str> = rows.iter().map(|c| c.phone_number.as_str()).collect();
    let (desired, dispatch): (Vec<_>, Vec<_>) = rows.iter().map(|c| c.admission.times()).unzip();
    let scheduled: Vec<bool> = rows.iter().map(|c| !c.admission.is_immediate()).collect();
    let priority: Vec<i32> = rows.iter().map(|c| c.priority).collect();
    let attrs: Vec<Option<Value>> = rows.iter().map(|c| c.attrs.to_json()).collect();
    let user_data: Vec<Option<Value>> = rows
        .iter()
        .map(|c| c.user_data.clone().map(Value::Object))
        .collect();
    let e164: Vec<Option<&str>> = rows.iter().map(|c| c.phone_e164.as_deref()).collect();
    super::stmt::query(
        db,
        sql,
        &[
            &ids, &tenants, &services, &states, &phones, &desired, &dispatch, &scheduled,
            &priority, &attrs, &user_data, &e164,
        ],
    )
    .await
}

//! PostgreSQL: the pool, migrations, and one module of plain async functions per aggregate.
//!
//! PostgreSQL is the truth (docs/decisions.md#source-of-truth): every write a caller is told
//! succeeded has been committed with `synchronous_commit` on. Functions here take a
//! `&Client` (pooled connection or transaction) and return [`crate::Error`] on failure, so
//! connection loss maps to 503 everywhere the same way.

pub mod admin_query;
pub mod api_errors;
pub mod api_keys;
pub mod batch;
pub mod call_in;
pub mod callbacks;
pub mod credentials;
pub mod dispatch;
pub mod events;
pub mod gms;
pub mod gms_query;
pub mod hours;
pub mod number_rules;
pub mod outcome;
pub mod publish;
pub mod push;
pub mod reschedule;
pub mod services;
pub mod slots;
pub mod stmt;
pub mod tenants;
pub mod throttle;
pub mod tls;
pub mod ui;
pub mod versioned;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::config::DbConfig;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Builds the pool. No connection is opened until first use, so a cold start stays short and a
/// process can start while PostgreSQL is still coming up.
pub fn pool(cfg: &DbConfig) -> anyhow::Result<Pool> {
    let mut pg = cfg.pg_config()?;
    // Server-side bounds on every session: no lock waits or idle transactions without end
    // (docs/bounded-answers.md).
    let mut options = format!(
        "-c lock_timeout={} -c idle_in_transaction_session_timeout={}",
        cfg.lock_timeout_ms, cfg.idle_in_tx_timeout_ms
    );
    if let Some(schema) = &cfg.schema {
        options.push_str(&format!(" -c search_path={schema}"));
    }
    if let Some(given) = pg.get_options() {
        // Options from DATABASE_URL come last, so an operator's own settings win.
        options = format!("{options} {given}");
    }
    pg.options(options);
    let manager = Manager::from_config(
        pg,
        tls::connector(&cfg.tls)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_millis(cfg.pool_timeout_ms)))
        .create_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
        .recycle_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
        .build()?;
    Ok(pool)
}

/// Applies pending migrations under an advisory lock, so processes starting together do not
/// race. Creates the configured schema first when there is one.
///
/// The first connection of a process is made here: its failure says what to fix
/// ([`tls::explain`]).
pub async fn migrate(pool: &Pool, schema: Option<&str>) -> anyhow::Result<()> {
    let mut client = pool.get().await.map_err(tls::explain)?;
    if let Some(schema) = schema {
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await?;
    }
    const LOCK: i64 = 0x656e_6761_6765; // "engage"
    // Waiting for a peer's migration is expected, whatever `DB_LOCK_TIMEOUT_MS` says: without
    // this a process with a short lock timeout would exit at start while another migrates.
    // The session is not given back to the pool afterwards (see below).
    client.batch_execute("SET lock_timeout = 0").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await?;
    let result = embedded::migrations::runner()
        .run_async(&mut **client)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await?;
    // Closed, not pooled: its lock timeout is no longer the configured one.
    drop(deadpool_postgres::Object::take(client));
    let report = result?;
    for m in report.applied_migrations() {
        tracing::info!(migration = %m.name(), version = m.version(), "migration applied");
    }
    Ok(())
}

/// Whether every embedded migration has been applied (readiness).
pub async fn migrations_current(pool: &Pool) -> anyhow::Result<bool> {
    let client = pool.get().await.map_err(tls::explain)?;
    let latest = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0);
    let row = client
        .query_opt(
            "SELECT max(version)::bigint FROM refinery_schema_history",
            &[],
        )
        .await;
    match row {
        Ok(Some(row)) => Ok(row.get::<_, Option<i64>>(0).unwrap_or(0) >= latest),
        Ok(None) => Ok(false),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

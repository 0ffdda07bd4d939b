//! Statements through the connection's statement cache: prepared once per pooled connection,
//! then only bound and executed. A plain `&str` query costs an extra round trip and a parse and
//! plan in PostgreSQL on every call, which showed in profiles of the create path (one batch
//! insert per group commit) and the worker's passes.

use deadpool_postgres::GenericClient;
use tokio_postgres::{Error, Row, types::ToSql};

/// Like `GenericClient::query`, through the statement cache.
pub async fn query(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Error> {
    let st = db.prepare_cached(sql).await?;
    db.query(&st, params).await
}

/// Like `GenericClient::query_one`, through the statement cache.
pub async fn query_one(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, Error> {
    let st = db.prepare_cached(sql).await?;
    db.query_one(&st, params).await
}

/// Like `GenericClient::query_opt`, through the statement cache.
pub async fn query_opt(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, Error> {
    let st = db.prepare_cached(sql).await?;
    db.query_opt(&st, params).await
}

/// Like `GenericClient::execute`, through the statement cache.
pub async fn execute(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, Error> {
    let st = db.prepare_cached(sql).await?;
    db.execute(&st, params).await
}

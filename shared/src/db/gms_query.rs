//! The reads of the GMS surface: query by properties, the admin queue listing and the
//! watermark counts (docs/gms.md#queries, docs/gms.md#admin-endpoints).
//!
//! Every statement is scoped by the tenant first (`c.tenant_id = $1`), takes every value as a
//! bound parameter (a user-data key too: `c.user_data ->> $n`), and ends in a `LIMIT`. The
//! customer-number filter reads `callbacks_tenant_phone_idx` (V12), live-state filters (and so
//! the queue listing and the watermarks) the partial `callbacks_service_idx` of live callbacks;
//! a user-data filter alone reads the tenant's rows, so
//! each read runs under a statement timeout ([`READ_TIMEOUT_MS`]) and a runaway scan ends as a
//! 503 instead of holding a connection.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use super::callbacks::{COLUMNS, StoredCallback};
use crate::{
    error::Error,
    model::{
        CallbackState,
        gms_query::{Filter, Operand, PropertyQuery, Test},
    },
};

/// Longest a GMS read may run in PostgreSQL, in milliseconds.
pub const READ_TIMEOUT_MS: u32 = 5_000;

type Param = Box<dyn ToSql + Sync + Send>;

/// A statement being built: conditions joined by AND, and their bound values (the admin
/// callback reads build on it too: `super::admin_query`).
pub(crate) struct Select {
    pub(crate) conditions: Vec<String>,
    params: Vec<Param>,
}

impl Select {
    pub(crate) fn new(tenant: &str) -> Self {
        Self {
            conditions: vec!["c.tenant_id = $1".into()],
            params: vec![Box::new(tenant.to_string())],
        }
    }

    /// Binds `value`, answering its placeholder (`$n`).
    pub(crate) fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// `SELECT … WHERE <conditions> ORDER BY <order> LIMIT max`.
    pub(crate) fn sql(&mut self, order: &str, max: usize) -> String {
        let limit = self.bind(i64::try_from(max).unwrap_or(i64::MAX));
        format!(
            "SELECT {COLUMNS} FROM callbacks c WHERE {} ORDER BY {order} LIMIT {limit}",
            self.conditions.join(" AND ")
        )
    }

    /// Adds the filters, combined by `operand`, as one condition.
    fn filters(&mut self, filters: &[Filter], operand: Operand) {
        if filters.is_empty() {
            return;
        }
        let parts: Vec<String> = filters.iter().map(|f| self.filter(f)).collect();
        let joiner = match operand {
            Operand::And => " AND ",
            Operand::Or => " OR ",
        };
        self.conditions.push(format!("({})", parts.join(joiner)));
    }

    /// One filter's condition. Negations use `IS DISTINCT FROM`, so a callback without the
    /// reason or user-data key counts as different.
    fn filter(&mut self, f: &Filter) -> String {
        let (eq, ne) = ("=", "IS DISTINCT FROM");
        let op = if f.negated { ne } else { eq };
        match &f.test {
            Test::CustomerNumber(v) => format!("c.phone_number {op} {}", self.bind(v.clone())),
            Test::Service(v) => format!("c.service {op} {}", self.bind(v.clone())),
            Test::Reason(v) => format!("c.reason {op} {}", self.bind(v.clone())),
            Test::Id(id) => format!("c.id {op} {}", self.bind(*id)),
            Test::States(states) => {
                let p = self.bind(state_names(states));
                let cond = format!("c.state = ANY({p}::text[])");
                if f.negated {
                    format!("NOT {cond}")
                } else {
                    cond
                }
            }
            Test::UserData { key, value } => {
                let k = self.bind(key.clone());
                let v = self.bind(value.clone());
                format!("(c.user_data ->> {k}) {op} {v}")
            }
        }
    }

    pub(crate) async fn run(
        self,
        db: &mut deadpool_postgres::Object,
        sql: &str,
    ) -> Result<Vec<StoredCallback>, Error> {
        let rows = self.rows(db, sql).await?;
        rows.iter().map(StoredCallback::from_row).collect()
    }

    /// Runs `sql` with the bound values under the statement timeout, in a transaction of its
    /// own (rolled back: it only reads).
    pub(crate) async fn rows(
        self,
        db: &mut deadpool_postgres::Object,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::Row>, Error> {
        let params: Vec<&(dyn ToSql + Sync)> = self
            .params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let tx = db.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {READ_TIMEOUT_MS}"))
            .await?;
        let rows = tx.query(sql, &params).await.map_err(timed_out)?;
        tx.rollback().await?;
        Ok(rows)
    }
}

/// A read ended by the statement timeout is a 503 (retry, or narrow the query), not a 500.
fn timed_out(e: tokio_postgres::Error) -> Error {
    if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
        return Error::Unavailable {
            message: "the query took too long; narrow it (a customer number or a state) and retry"
                .into(),
            cause: Some(e.to_string()),
        };
    }
    e.into()
}

pub(crate) fn state_names(states: &[CallbackState]) -> Vec<String> {
    states.iter().map(|s| s.as_str().to_string()).collect()
}

/// The callbacks of `tenant` (of `service` when given) matching the query, newest desired time
/// first, at most `query.max`.
pub async fn find(
    db: &mut deadpool_postgres::Object,
    tenant: &str,
    service: Option<&str>,
    query: &PropertyQuery,
) -> Result<Vec<StoredCallback>, Error> {
    let mut s = Select::new(tenant);
    if let Some(service) = service {
        let p = s.bind(service.to_string());
        s.conditions.push(format!("c.service = {p}"));
    }
    s.filters(&query.filters, query.operand);
    let sql = s.sql("c.desired_time DESC, c.id", query.max);
    s.run(db, &sql).await
}

/// What the admin queue listing asks for.
#[derive(Debug, Clone)]
pub struct QueueListing {
    /// Only this service (`target`).
    pub service: Option<String>,
    /// Desired times from (inclusive).
    pub from: Timestamp,
    /// Desired times to (inclusive).
    pub to: Timestamp,
    /// States listed.
    pub states: Vec<CallbackState>,
    /// Further filters (AND).
    pub filters: Vec<Filter>,
    /// The most records answered, all services together.
    pub max: usize,
}

/// The callbacks of the listing, in desired-time order.
pub async fn queues(
    db: &mut deadpool_postgres::Object,
    tenant: &str,
    listing: &QueueListing,
) -> Result<Vec<StoredCallback>, Error> {
    let mut s = Select::new(tenant);
    let (from, to) = (s.bind(listing.from), s.bind(listing.to));
    s.conditions.push(format!(
        "c.desired_time >= {from} AND c.desired_time <= {to}"
    ));
    let states = s.bind(state_names(&listing.states));
    s.conditions
        .push(format!("c.state = ANY({states}::text[])"));
    if let Some(service) = &listing.service {
        let p = s.bind(service.clone());
        s.conditions.push(format!("c.service = {p}"));
    }
    s.filters(&listing.filters, Operand::And);
    let sql = s.sql("c.desired_time, c.id", listing.max);
    s.run(db, &sql).await
}

/// Live callbacks of one service, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermark {
    /// Booked for later (SCHEDULED).
    pub scheduled: i64,
    /// Waiting for an agent (QUEUED: due, handed off or about to be).
    pub waiting: i64,
    /// With an agent (ROUTING, PROCESSING).
    pub executing: i64,
}

/// Live-callback counts per service of `tenant` (only `service` when given): every live
/// service is listed, with zeros when it has no callbacks; a deleted service only while it
/// still has live callbacks.
pub async fn watermarks(
    db: &impl GenericClient,
    tenant: &str,
    service: Option<&str>,
) -> Result<Vec<(String, Watermark)>, Error> {
    let rows = super::stmt::query(
        db,
        "WITH counts AS (
             SELECT c.service,
                    count(*) FILTER (WHERE c.state = 'SCHEDULED') AS scheduled,
                    count(*) FILTER (WHERE c.state = 'QUEUED') AS waiting,
                    count(*) FILTER (WHERE c.state IN ('ROUTING', 'PROCESSING')) AS executing
             FROM callbacks c
             WHERE c.tenant_id = $1
               AND c.state = ANY('{SCHEDULED,QUEUED,ROUTING,PROCESSING}'::text[])
               AND ($2::text IS NULL OR c.service = $2)
             GROUP BY c.service
         ), names AS (
             SELECT name FROM services
             WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR name = $2)
             UNION SELECT service FROM counts
         )
         SELECT n.name, coalesce(k.scheduled, 0), coalesce(k.waiting, 0),
                coalesce(k.executing, 0)
         FROM names n LEFT JOIN counts k ON k.service = n.name
         ORDER BY n.name",
        &[&tenant, &service],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let w = Watermark {
                scheduled: r.get(1),
                waiting: r.get(2),
                executing: r.get(3),
            };
            (r.get(0), w)
        })
        .collect())
}

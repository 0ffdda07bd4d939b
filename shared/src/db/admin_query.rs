//! The reads of the admin callback API (docs/admin-queries.md): keyset pages of a tenant's
//! callbacks under a [`CallbackFilter`], the bulk cancel's counts and id batches, and a
//! callback's state history.
//!
//! Built on the GMS reads' statement builder (`super::gms_query::Select`): scoped by the tenant
//! first, every value a bound parameter, a `LIMIT`, and the statement timeout
//! ([`super::gms_query::READ_TIMEOUT_MS`]; a runaway scan is a 503). The indexes of V16 keep
//! each shape an index range scan at 10 million rows (docs/admin-queries.md#indexes).

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::{callbacks::StoredCallback, gms_query::Select};
use crate::{
    error::Error,
    model::{
        CallbackState,
        admin_query::{CallbackFilter, Cursor, PhoneMatch, Sort, SortKey},
    },
};

impl Select {
    /// Adds every part of `filter`.
    fn admin_filter(&mut self, f: &CallbackFilter) {
        let ranges = [
            ("c.desired_time >=", f.desired_from),
            ("c.desired_time <", f.desired_to),
            ("c.created_at >=", f.created_from),
            ("c.created_at <", f.created_to),
        ];
        for (test, value) in ranges {
            if let Some(t) = value {
                let p = self.bind(t);
                self.conditions.push(format!("{test} {p}"));
            }
        }
        if !f.states.is_empty() {
            let p = self.bind(super::gms_query::state_names(&f.states));
            self.conditions.push(format!("c.state = ANY({p}::text[])"));
        }
        if !f.reasons.is_empty() {
            let names: Vec<String> = f.reasons.iter().map(|r| r.as_str().to_string()).collect();
            let p = self.bind(names);
            self.conditions.push(format!("c.reason = ANY({p}::text[])"));
        }
        if let Some(service) = &f.service {
            let p = self.bind(service.clone());
            self.conditions.push(format!("c.service = {p}"));
        }
        match &f.phone {
            Some(PhoneMatch::E164(n)) => {
                let p = self.bind(n.clone());
                self.conditions.push(format!("c.phone_e164 = {p}"));
            }
            Some(PhoneMatch::AsGiven(n)) => {
                let p = self.bind(n.clone());
                self.conditions.push(format!("c.phone_number = {p}"));
            }
            None => {}
        }
    }

    /// The select of a listing: `tenant`'s callbacks matching `filter` after `cursor`, and the
    /// `ORDER BY` of `sort`.
    fn listing(
        tenant: &str,
        filter: &CallbackFilter,
        sort: Sort,
        cursor: Option<&Cursor>,
    ) -> (Self, String) {
        let mut s = Self::new(tenant);
        s.admin_filter(filter);
        let order = s.keyset(sort, cursor);
        (s, order)
    }

    /// Adds the keyset condition after `cursor` and answers the `ORDER BY` of `sort`.
    fn keyset(&mut self, sort: Sort, cursor: Option<&Cursor>) -> String {
        let column = sort_column(sort.key);
        let (cmp, dir) = if sort.desc {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(c) = cursor {
            let (at, id) = (self.bind(c.at), self.bind(c.id));
            self.conditions
                .push(format!("({column}, c.id) {cmp} ({at}, {id})"));
        }
        format!("{column} {dir}, c.id {dir}")
    }
}

/// One page: at most `limit` callbacks of `tenant` matching `filter`, in `sort` order, after
/// `cursor`.
pub async fn page(
    db: &mut deadpool_postgres::Object,
    tenant: &str,
    filter: &CallbackFilter,
    sort: Sort,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<StoredCallback>, Error> {
    let (mut s, order) = Select::listing(tenant, filter, sort, cursor);
    let sql = s.sql(&order, limit);
    s.run(db, &sql).await
}

/// Most bytes of `userData` and attributes (as JSON text) one page or export batch holds: a
/// callback's user data is bounded only by the public port's body limit, so a thousand fat
/// rows would otherwise cost the server gigabytes (docs/admin-queries.md#memory).
pub const PAGE_BYTES: i64 = 8 * 1024 * 1024;

/// Like [`page`], but cut short so the rows' user data and attributes stay within
/// [`PAGE_BYTES`] (at least one row whatever its size). Answers the rows and whether the cut
/// left out rows that `limit` would have taken (then more may follow).
///
/// Two statements: the sizes of the next `limit` rows (only their ids, sort values and
/// lengths cross the wire), then the rows that fit.
pub async fn page_bounded(
    db: &mut deadpool_postgres::Object,
    tenant: &str,
    filter: &CallbackFilter,
    sort: Sort,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<(Vec<StoredCallback>, bool), Error> {
    let (mut s, order) = Select::listing(tenant, filter, sort, cursor);
    let max = s.bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let sql = format!(
        "SELECT (coalesce(octet_length(c.user_data::text), 0)
                 + coalesce(octet_length(c.attrs::text), 0))::bigint
         FROM callbacks c WHERE {} ORDER BY {order} LIMIT {max}",
        s.conditions.join(" AND ")
    );
    let sizes = s
        .rows(db, &sql)
        .await?
        .iter()
        .map(|r| r.try_get::<_, i64>(0))
        .collect::<Result<Vec<i64>, _>>()?;
    let fit = fitting(&sizes, PAGE_BYTES);
    let rows = page(db, tenant, filter, sort, cursor, fit).await?;
    Ok((rows, fit < sizes.len()))
}

/// The sort values and ids (as cursors) of at most `limit` callbacks of `tenant` matching
/// `filter`, in `sort` order, after `cursor`: what a bulk cancel needs, without reading the
/// rows' user data.
pub async fn keys_page(
    db: &mut deadpool_postgres::Object,
    tenant: &str,
    filter: &CallbackFilter,
    sort: Sort,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<Cursor>, Error> {
    let (mut s, order) = Select::listing(tenant, filter, sort, cursor);
    let max = s.bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let column = sort_column(sort.key);
    let sql = format!(
        "SELECT {column}, c.id FROM callbacks c WHERE {} ORDER BY {order} LIMIT {max}",
        s.conditions.join(" AND ")
    );
    s.rows(db, &sql)
        .await?
        .iter()
        .map(|r| {
            Ok(Cursor {
                at: r.try_get(0)?,
                id: r.try_get(1)?,
            })
        })
        .collect()
}

/// The column a listing is ordered by.
fn sort_column(key: SortKey) -> &'static str {
    match key {
        SortKey::DesiredTime => "c.desired_time",
        SortKey::Created => "c.created_at",
    }
}

/// How many of `sizes` (in order) fit in `budget` bytes: at least one when there is one.
fn fitting(sizes: &[i64], budget: i64) -> usize {
    let mut total = 0i64;
    let n = sizes
        .iter()
        .take_while(|size| {
            total = total.saturating_add(**size);
            total <= budget
        })
        .count();
    n.max(sizes.len().min(1))
}

/// The cursor after the last of `rows` (listed in `sort` order).
pub fn cursor_after(rows: &[StoredCallback], sort: Sort) -> Option<Cursor> {
    rows.last().map(|r| Cursor {
        at: match sort.key {
            SortKey::DesiredTime => r.desired_time,
            SortKey::Created => r.created_at,
        },
        id: r.id,
    })
}

/// The states a cancel may end (`db::callbacks::cancel` refuses PROCESSING and COMPLETED).
pub const CANCELLABLE: [CallbackState; 3] = [
    CallbackState::Scheduled,
    CallbackState::Queued,
    CallbackState::Routing,
];

/// `filter` narrowed to what a cancel may end; `None` when nothing can match.
pub fn cancellable(filter: &CallbackFilter) -> Option<CallbackFilter> {
    let mut f = filter.clone();
    f.states = if f.states.is_empty() {
        CANCELLABLE.to_vec()
    } else {
        f.states.retain(|s| CANCELLABLE.contains(s));
        f.states
    };
    (!f.states.is_empty()).then_some(f)
}

/// How many callbacks of `tenant` match `filter` (a dry run's count).
pub async fn count(
    db: &mut deadpool_postgres::Object,
    tenant: &str,
    filter: &CallbackFilter,
) -> Result<i64, Error> {
    let mut s = Select::new(tenant);
    s.admin_filter(filter);
    let sql = format!(
        "SELECT count(*) FROM callbacks c WHERE {}",
        s.conditions.join(" AND ")
    );
    let rows = s.rows(db, &sql).await?;
    Ok(rows.first().map_or(0, |r| r.get(0)))
}

/// How many of `ids` are callbacks of `tenant` in a cancellable state.
pub async fn count_ids(
    db: &mut deadpool_postgres::Object,
    tenant: &str,
    ids: &[Uuid],
) -> Result<i64, Error> {
    let mut s = Select::new(tenant);
    let p = s.bind(ids.to_vec());
    s.conditions.push(format!("c.id = ANY({p}::uuid[])"));
    let states = s.bind(super::gms_query::state_names(&CANCELLABLE));
    s.conditions
        .push(format!("c.state = ANY({states}::text[])"));
    let sql = format!(
        "SELECT count(*) FROM callbacks c WHERE {}",
        s.conditions.join(" AND ")
    );
    let rows = s.rows(db, &sql).await?;
    Ok(rows.first().map_or(0, |r| r.get(0)))
}

/// One entry of a callback's state history.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When it was recorded (the voice platform's time for its events).
    #[serde(serialize_with = "wire")]
    pub at: Timestamp,
    /// The state entered.
    pub state: String,
    /// The completion reason, with COMPLETED.
    pub reason: Option<String>,
    /// Who wrote it: `create` (the row's creation), `api` (cancel), `worker` (hand-off, TTL
    /// expiry, retry), `ors` (the voice platform's events).
    pub source: String,
    /// The dial attempt it belongs to, when known.
    pub attempt: Option<i16>,
}

fn wire<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::model::callback::wire_time(*t))
}

/// The state history of callback `id` of `tenant`, oldest first (empty for another tenant's
/// id: the caller reads the callback first and answers 404).
pub async fn history(
    db: &impl GenericClient,
    tenant: &str,
    id: Uuid,
) -> Result<Vec<HistoryEntry>, Error> {
    let rows = super::stmt::query(
        db,
        "SELECT c.created_at AS at,
                CASE WHEN c.scheduled THEN 'SCHEDULED' ELSE 'QUEUED' END AS state,
                NULL::text AS reason, 'create' AS source, 1::smallint AS attempt, 0 AS n
         FROM callbacks c WHERE c.id = $1 AND c.tenant_id = $2
         UNION ALL
         SELECT e.at, e.state, e.reason, e.source, e.attempt, 1
         FROM callback_events e JOIN callbacks c ON c.id = e.callback_id
         WHERE e.callback_id = $1 AND c.tenant_id = $2
         ORDER BY at, n",
        &[&id, &tenant],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| HistoryEntry {
            at: r.get(0),
            state: r.get(1),
            reason: r.get(2),
            source: r.get(3),
            attempt: r.get(4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::fitting;

    #[test]
    fn pages_stop_at_the_byte_budget_but_take_one_row_at_least() {
        assert_eq!(fitting(&[], 10), 0);
        assert_eq!(fitting(&[50], 10), 1);
        assert_eq!(fitting(&[3, 3, 3, 3], 10), 3);
        assert_eq!(fitting(&[3, 3, 4, 1], 10), 3);
        assert_eq!(fitting(&[1; 5], 10), 5);
    }
}

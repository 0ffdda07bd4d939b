//! The CSV export of a filtered listing (`GET …/callbacks.csv`, or `GET …/callbacks?format=csv`),
//! streamed: rows are read in keyset batches of [`BATCH`] (each a bounded statement of its own,
//! like a page of the listing) and each batch is written to the body as it comes, so the
//! server holds one batch at a time whatever the export's size (docs/admin-queries.md#export).
//!
//! A header row, then one row per callback in the listing's sort order; times in UTC (`Z`), or
//! with `tz` local with their offset; user data as a JSON column. The first batch is read
//! before the answer starts, so a bad tenant or a timed-out first read is an ordinary error; a
//! later failure can only end the body early (the connection is closed without the final
//! chunk, so the client sees a truncated transfer, never a short file that looks complete).

use std::io;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use shared::{
    ApiError,
    db::{admin_query, callbacks::StoredCallback},
    http::{ApiResult, AppState, Path, Query},
    model::admin_query::{Cursor, Listing},
};

use super::{
    access::{Actor, Operation},
    known_tenant,
    view::{CSV_HEADER, csv_row},
};

/// Rows read per statement.
pub const BATCH: usize = 1000;

/// `GET …/callbacks.csv`.
pub async fn csv(
    State(state): State<AppState>,
    actor: Actor,
    Path(ccid): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let listing = Listing::parse(&pairs)?;
    respond(state, actor, ccid, listing).await
}

/// The export of `listing` (its filters, sort and `tz`; every row, so no `cursor` or `limit`).
pub async fn respond(
    state: AppState,
    actor: Actor,
    tenant: String,
    listing: Listing,
) -> ApiResult<Response> {
    actor.may(&tenant, Operation::Export)?;
    if listing.cursor.is_some() || listing.limit != shared::model::admin_query::DEFAULT_LIMIT {
        return Err(ApiError::bad_request(
            "cursor and limit are not taken by the export: it writes every matching row",
        ));
    }
    known_tenant(&state, &tenant).await?;
    let mut export = Export {
        state,
        tenant,
        listing,
        cursor: None,
        header: true,
        done: false,
    };
    let first = export.fetch().await?;
    let filename = format!("attachment; filename=\"callbacks-{}.csv\"", export.tenant);
    let body = Body::from_stream(futures::stream::unfold(
        (export, Some(first)),
        |(mut ex, first)| async move {
            let chunk = ex.next(first).await?;
            Some((chunk, (ex, None)))
        },
    ));
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&filename) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// An export under way: where the next batch starts.
struct Export {
    state: AppState,
    tenant: String,
    listing: Listing,
    cursor: Option<Cursor>,
    header: bool,
    done: bool,
}

impl Export {
    /// The next batch, from a connection held only while it is read.
    async fn fetch(&mut self) -> Result<Vec<StoredCallback>, shared::Error> {
        let mut client = self.state.db.get().await?;
        let (rows, cut) = admin_query::page_bounded(
            &mut client,
            &self.tenant,
            &self.listing.filter,
            self.listing.sort,
            self.cursor.as_ref(),
            BATCH,
        )
        .await?;
        self.cursor = admin_query::cursor_after(&rows, self.listing.sort).or(self.cursor);
        self.done = rows.len() < BATCH && !cut;
        Ok(rows)
    }

    /// The next chunk of the body (`first`: the batch read before answering); `None` at the end.
    async fn next(&mut self, first: Option<Vec<StoredCallback>>) -> Option<io::Result<Vec<u8>>> {
        let rows = match first {
            Some(rows) => rows,
            None if self.done => return None,
            None => match self.fetch().await {
                Ok(rows) => rows,
                Err(e) => {
                    self.done = true;
                    tracing::warn!(error = %e, "CSV export ended early: a batch read failed");
                    return Some(Err(io::Error::other("export read failed")));
                }
            },
        };
        if rows.is_empty() && !self.header {
            return None;
        }
        Some(self.render(&rows))
    }

    /// `rows` as CSV (after the header row on the first chunk).
    fn render(&mut self, rows: &[StoredCallback]) -> io::Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 256 + 256));
        if std::mem::take(&mut self.header) {
            w.write_record(CSV_HEADER)?;
        }
        let zone = self.listing.zone.as_ref();
        for cb in rows {
            w.write_record(csv_row(cb, zone))?;
        }
        w.into_inner().map_err(|e| io::Error::other(e.to_string()))
    }
}

//! `GET /ges/v1/tenants/{ccid}/api-errors?corrId=&limit=`: the tenant's recent failed API
//! calls, newest first (the Developer tab's search by correlation id).

use axum::{Router, extract::State, routing::get};
use serde::Deserialize;
use shared::{
    ApiError, db,
    db::api_errors::FailedCallRecord,
    http::ApiResult,
    http::{Admin, AppState, Envelope, Path, Query},
};

/// `GET …/api-errors` (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new().route("/ges/v1/tenants/{ccid}/api-errors", get(list))
}

/// Query parameters of `GET …/api-errors`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorQuery {
    /// Only the error of this request (`corrId` of its answer); absent = the newest ones.
    pub corr_id: Option<String>,
    /// At most this many (1–250, default 50).
    pub limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
    Query(q): Query<ErrorQuery>,
) -> ApiResult<Envelope<Vec<FailedCallRecord>>> {
    let corr_id = q
        .corr_id
        .map(|c| {
            uuid::Uuid::parse_str(c.trim())
                .map_err(|_| ApiError::bad_request("corrId is not a correlation id"))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=250).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 250"));
    }
    let client = state.db.get().await?;
    db::tenants::get(&client, &ccid).await?;
    Ok(Envelope::ok(
        db::api_errors::list(&client, &ccid, corr_id, limit).await?,
    ))
}

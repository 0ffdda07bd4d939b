//! `PUT/GET /ges/v1/tenants/{ccid}/cors`: the browser origins allowed to call the public API
//! with the tenant's API keys (`{"allowed_origins":["https://app.example.com"]}`).
//! Changes reach the public port within `CORS_CACHE_SECONDS`.

use axum::{Router, extract::State, routing::get};
use serde::{Deserialize, Serialize};
use shared::{
    ApiError, db,
    http::ApiResult,
    http::{Admin, AppState, Envelope, Json, Path},
};

/// `GET|PUT …/cors`: the tenant's allowed browser origins (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new().route("/ges/v1/tenants/{ccid}/cors", get(show).put(put))
}

/// Most origins per tenant.
const MAX_ORIGINS: usize = 100;

/// The CORS settings of a tenant.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Exact origins (`scheme://host[:port]`), or `"*"` for any origin.
    pub allowed_origins: Vec<String>,
}

/// Checks one origin: `"*"`, or `http(s)://host[:port]` without path, query or trailing slash.
pub fn valid_origin(origin: &str) -> Result<String, ApiError> {
    if origin == "*" {
        return Ok(origin.into());
    }
    let bad = || {
        ApiError::bad_request(format!(
            "allowed_origins: {origin:?} is not an origin: use scheme://host[:port] \
             (e.g. https://app.example.com, no path or trailing slash) or \"*\""
        ))
    };
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || origin.len() > 253 {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if !host_ok || !port_ok {
        return Err(bad());
    }
    Ok(origin.to_ascii_lowercase())
}

async fn put(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
    Json(body): Json<Cors>,
) -> ApiResult<Envelope<Cors>> {
    if body.allowed_origins.len() > MAX_ORIGINS {
        return Err(ApiError::bad_request(format!(
            "allowed_origins: at most {MAX_ORIGINS} origins"
        )));
    }
    let mut origins = body
        .allowed_origins
        .iter()
        .map(|o| valid_origin(o.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    origins.sort();
    origins.dedup();
    let client = state.db.get().await?;
    let stored = db::tenants::set_cors_origins(&client, &ccid, &origins).await?;
    Ok(Envelope::ok(Cors {
        allowed_origins: stored,
    }))
}

async fn show(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
) -> ApiResult<Envelope<Cors>> {
    let client = state.db.get().await?;
    Ok(Envelope::ok(Cors {
        allowed_origins: db::tenants::cors_origins(&client, &ccid).await?,
    }))
}

#[cfg(test)]
mod tests {
    use super::valid_origin;

    #[test]
    fn origins() {
        for ok in [
            "*",
            "https://app.example.com",
            "http://localhost:8080",
            "https://A.example",
        ] {
            assert!(valid_origin(ok).is_ok(), "{ok}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "ftp://x",
            "https://x:0",
            "https://x:99999",
            "https://a b",
            "https://x/path",
            "https://",
        ] {
            assert!(valid_origin(bad).is_err(), "{bad}");
        }
        assert_eq!(
            valid_origin("https://A.example").unwrap(),
            "https://a.example"
        );
    }
}

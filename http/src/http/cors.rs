//! CORS of the public port, per tenant (origins set with `PUT /ges/v1/tenants/{ccid}/cors`).
//!
//! A preflight (`OPTIONS` with `Access-Control-Request-Method`) carries no `x-api-key`, so it
//! cannot name its tenant: it passes when **any** tenant allows the origin (the union of all
//! tenants' origins, cached for `CORS_CACHE_SECONDS`). The actual request then carries its key:
//! it passes only when the key's own tenant allows the origin, and is refused with 403 before
//! the handler runs otherwise, so a tenant's origins never open another tenant's API.
//! Requests without an `Origin` header (servers, apps) are not affected. CORS is no access
//! control against non-browser callers: the API key stays the credential.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use deadpool_postgres::Pool;
use tokio::sync::RwLock;

use super::{
    auth_guard::{self, KeyOutcome},
    client_addr::{self, ClientAddr},
    envelope,
    state::AppState,
};
use crate::{config::TrustedProxies, db};

/// Allowed origins of every tenant that has some.
#[derive(Debug, Default)]
struct Snapshot {
    by_tenant: HashMap<String, HashSet<String>>,
    union: HashSet<String>,
}

impl Snapshot {
    fn tenant_allows(&self, tenant: &str, origin: &str) -> bool {
        self.by_tenant
            .get(tenant)
            .is_some_and(|o| o.contains(origin) || o.contains("*"))
    }
    fn any_allows(&self, origin: &str) -> bool {
        self.union.contains(origin) || self.union.contains("*")
    }
}

struct Cors {
    db: Pool,
    /// Who may set `X-Forwarded-For` (the client-address tag, `http::client_addr`).
    trusted: TrustedProxies,
    /// For the API-key resolution shared with the `ApiTenant` extractor.
    state: AppState,
    ttl: Duration,
    cache: RwLock<Option<(Instant, Arc<Snapshot>)>>,
}

impl Cors {
    async fn snapshot(&self) -> Arc<Snapshot> {
        if let Some((at, snap)) = &*self.cache.read().await
            && at.elapsed() < self.ttl
        {
            return snap.clone();
        }
        let mut cache = self.cache.write().await;
        if let Some((at, snap)) = &*cache
            && at.elapsed() < self.ttl
        {
            return snap.clone();
        }
        let loaded = async {
            let client = self.db.get().await?;
            db::tenants::all_cors_origins(&client).await
        }
        .await;
        let snap = match loaded {
            Ok(rows) => {
                let mut s = Snapshot::default();
                for (tenant, origins) in rows {
                    s.union.extend(origins.iter().cloned());
                    s.by_tenant.insert(tenant, origins.into_iter().collect());
                }
                Arc::new(s)
            }
            Err(e) => {
                // Keep serving the last known origins; an empty set only before the first load.
                tracing::warn!(error = %e, "CORS origins could not be loaded");
                cache.as_ref().map(|(_, s)| s.clone()).unwrap_or_default()
            }
        };
        *cache = Some((Instant::now(), snap.clone()));
        snap
    }
}

/// Wraps the public app with the per-tenant CORS check, which first tags the request with its
/// client address (`http::client_addr`) that the check and the `ApiTenant` extractor read. One
/// middleware, not two: each layer of a router costs every request a few allocations
/// (docs/costs.md#create-throughput-against-the-postgresql-insert-ceiling).
pub fn wrap(app: Router, state: &AppState) -> Router {
    let cors = Arc::new(Cors {
        db: state.db.clone(),
        trusted: state.cfg.http.trusted_proxies.clone(),
        state: state.clone(),
        ttl: Duration::from_secs(state.cfg.http.cors_cache_seconds),
        cache: RwLock::new(None),
    });
    app.layer(middleware::from_fn_with_state(cors, check))
}

const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
const ALLOW_HEADERS: &str = "content-type, x-api-key, idempotency-key, cache-control";

fn allow(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-correlation-id"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

fn forbidden(message: String) -> Response {
    envelope::respond::<()>(403, &message, None)
}

async fn check(State(cors): State<Arc<Cors>>, mut req: Request, next: Next) -> Response {
    client_addr::tag(&cors.trusted, &mut req);
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let origin_text = origin.to_str().unwrap_or("").to_ascii_lowercase();
    let snap = cors.snapshot().await;
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !snap.any_allows(&origin_text) {
            return forbidden(format!(
                "CORS: origin {origin_text} is not allowed by any tenant \
                 (admin: PUT /ges/v1/tenants/{{ccid}}/cors)"
            ));
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        allow(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return resp;
    }
    // Resolved once here and handed to the `ApiTenant` extractor (failures counted once).
    let client = req.extensions().get::<ClientAddr>().copied();
    let outcome = match auth_guard::resolve(&cors.state, req.headers(), client.as_ref()).await {
        Ok(outcome) => outcome,
        Err(e) => return e.into_response(),
    };
    let tenant = match &outcome {
        Some(KeyOutcome::Tenant(t)) => Some(t.clone()),
        _ => None,
    };
    let allowed = match &tenant {
        Some(t) => snap.tenant_allows(t, &origin_text),
        // No or unknown key: the handler answers 401; let the browser show it when some
        // tenant uses this origin.
        None => snap.any_allows(&origin_text),
    };
    if !allowed {
        let mut resp = forbidden(format!(
            "CORS: origin {origin_text} is not allowed for this API key's tenant \
             (admin: PUT /ges/v1/tenants/{{ccid}}/cors)"
        ));
        if snap.any_allows(&origin_text) {
            allow(resp.headers_mut(), &origin);
        }
        return resp;
    }
    if let Some(outcome) = outcome {
        req.extensions_mut().insert(outcome);
    }
    let mut resp = next.run(req).await;
    allow(resp.headers_mut(), &origin);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_and_union_checks() {
        let mut s = Snapshot::default();
        s.by_tenant.insert(
            "a".into(),
            ["https://a.example".to_string()].into_iter().collect(),
        );
        s.by_tenant
            .insert("b".into(), ["*".to_string()].into_iter().collect());
        s.union.insert("https://a.example".into());
        assert!(s.tenant_allows("a", "https://a.example"));
        assert!(!s.tenant_allows("a", "https://b.example"));
        assert!(s.tenant_allows("b", "https://anything.example"));
        assert!(!s.tenant_allows("c", "https://a.example"));
        assert!(s.any_allows("https://a.example"));
        assert!(!s.any_allows("https://z.example"));
        s.union.insert("*".into());
        assert!(s.any_allows("https://z.example"));
    }
}

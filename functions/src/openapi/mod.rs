//! `GET /engagement/v3/openapi.json`: the OpenAPI 3.0 document of the public Engagement API,
//! as served by this build (docs/api-contract.md).
//!
//! Assembled here rather than derived from the types: the request types are deliberately
//! permissive (every field optional, informational fields any JSON) so that the validators can
//! answer in their own words, so the contract lives in the validators, not in the types. The
//! document states it once, next to the constants the validators use, and is held to the code
//! three ways: unit tests compare it with the routes and the Rust types (`conformance`), and
//! schemathesis checks the running service against it (`tests/contract/run.sh`).

mod paths;
mod schemas;

#[cfg(test)]
mod conformance;

use axum::{Json, Router, routing::get};
use serde_json::{Value, json};
use shared::http::AppState;

/// Route of the document (public, no API key needed).
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/engagement/v3/openapi.json",
        get(|| async { Json(document()) }),
    )
}

/// The OpenAPI 3 document of the public API, served at `GET /engagement/v3/openapi.json`.
pub fn document() -> Value {
    json!({
      "openapi": "3.0.3",
      "info": {"title": "Engage — Engagement API v3", "version": env!("CARGO_PKG_VERSION"),
               "description": "Callback engagement API, wire-compatible with the Genesys Engagement Service Engagement API v3. Every answer is the envelope {status:{code,message,corrId}, data}; status.code equals the HTTP status. An unknown route answers 404 and a known route with another method 405, in the same envelope. The x-api-key alone decides the tenant: a non-empty ccid or ContactCenterID header is refused (400). Browsers are served CORS for the origins each tenant allows."},
      "servers": [{"url": "/"}],
      "paths": paths::all(),
      "components": {
        "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
            "description": "the tenant's API key (`engage apikey create`); it alone decides the tenant"}},
        "schemas": schemas::all()
      }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    use super::*;

    /// Route strings of the public API found in this crate's sources.
    fn routed_paths() -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).expect("src readable").flatten() {
                let p = entry.path();
                if p.is_dir() {
                    if !p.ends_with("openapi") {
                        stack.push(p);
                    }
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&p).expect("source readable");
                    for piece in text.split('"').skip(1).step_by(2) {
                        if piece.starts_with("/engagement/v3/") {
                            found.insert(piece.to_string());
                        }
                    }
                }
            }
        }
        found.insert("/engagement/v3/openapi.json".into());
        found
    }

    #[test]
    fn every_public_route_is_documented() {
        let doc = document();
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        assert_eq!(routed_paths(), documented);
    }

    async fn status(app: &Router, method: &str, uri: &str) -> u16 {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("infallible");
        resp.status().as_u16()
    }

    /// Each documented operation is routed on the public port with exactly its method: without
    /// an API key it answers 401 (the document itself 200), any other method 405.
    #[tokio::test]
    async fn every_documented_operation_is_routed_on_the_public_port() {
        let cfg = shared::Config::from_vars([(
            "DATABASE_URL".to_string(),
            "postgres://u@127.0.0.1:1/d".to_string(),
        )])
        .expect("config");
        let app = crate::external_app(AppState::new(cfg).expect("state"));
        for (path, item) in document()["paths"].as_object().expect("paths") {
            let uri = path
                .replace("{service}", "sales")
                .replace("{queue}", "sales");
            let documented: Vec<&String> = item.as_object().expect("item").keys().collect();
            for method in ["get", "post", "put", "delete", "patch"] {
                let code = status(&app, &method.to_uppercase(), &uri).await;
                if documented.contains(&&method.to_string()) {
                    assert!(code == 401 || code == 200, "{method} {uri} → {code}");
                } else {
                    assert_eq!(code, 405, "{method} {uri} is not documented");
                }
            }
        }
    }
}

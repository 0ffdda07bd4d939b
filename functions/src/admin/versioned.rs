//! One admin router for every versioned object kind (`shared::db::versioned`,
//! docs/admin-objects.md#common-behaviour):
//! `PUT/GET/DELETE /ges/v1/tenants/{ccid}/{kind}/{name}` and `GET /ges/v1/tenants/{ccid}/{kind}`.
//!
//! PUT answers 201 when it created the object and 200 when it replaced it (version + 1); GET of
//! the list answers 404 for an unknown tenant; DELETE answers `{"name": …}`. A kind adds only
//! what differs ([`AdminKind`]): its URL segment, how a body is validated, the checks that need
//! the database (references to other objects) and what to forget after a change.

use std::future::Future;

use axum::{Router, extract::State, routing::get};
use serde::Serialize;
use serde_json::Value;
use shared::{
    ApiError, db,
    db::versioned::{self as store, Kind, Stored},
    http::ApiResult,
    http::{Admin, AppState, Envelope, Json, Path},
    model::valid_name,
};

/// What the admin API of one kind adds to its store.
pub trait AdminKind: Kind {
    /// The URL segment (`services`, `number-rules`, `business-hours`, `capacity-rules`).
    const PATH: &'static str;
    /// What a valid name is, for the message that refuses one.
    const NAME_RULE: &'static str = "1-255 printable characters without '/'";

    /// Checks a PUT body against the URL's name; returns the body to store.
    fn validate(name: &str, body: Value) -> ApiResult<Self::Body>;

    /// Checks that need the database (e.g. that the rules a service names exist).
    fn check(
        _client: &deadpool_postgres::Client,
        _tenant: &str,
        _body: &Self::Body,
    ) -> impl Future<Output = ApiResult<()>> + Send {
        async { Ok(()) }
    }

    /// Runs after a PUT or DELETE changed the object (e.g. forget a cached copy).
    fn changed(_state: &AppState, _tenant: &str, _name: &str) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The routes of one kind.
pub fn router<K: AdminKind>() -> Router<AppState> {
    let all = format!("/ges/v1/tenants/{{ccid}}/{}", K::PATH);
    let one = format!("{all}/{{name}}");
    Router::new()
        .route(&all, get(list::<K>))
        .route(&one, get(show::<K>).put(put::<K>).delete(remove::<K>))
}

/// Validates and stores one object (shared with the CLI); returns it and whether it is new.
pub async fn put_object<K: AdminKind>(
    state: &AppState,
    tenant: &str,
    name: &str,
    body: Value,
) -> ApiResult<(Stored<K>, bool)> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(format!(
            "{} name must be {}",
            K::SPEC.noun,
            K::NAME_RULE
        )));
    }
    let body = K::validate(name, body)?;
    let client = state.db.get().await?;
    K::check(&client, tenant, &body).await?;
    let stored = store::put::<K>(&client, tenant, name, &body).await?;
    K::changed(state, tenant, name).await;
    Ok(stored)
}

async fn put<K: AdminKind>(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Envelope<Stored<K>>> {
    let (stored, created) = put_object::<K>(&state, &ccid, &name, body).await?;
    Ok(if created {
        Envelope::created(stored)
    } else {
        Envelope::ok(stored)
    })
}

async fn show<K: AdminKind>(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
) -> ApiResult<Envelope<Stored<K>>> {
    let client = state.db.get().await?;
    Ok(Envelope::ok(store::get::<K>(&client, &ccid, &name).await?))
}

async fn list<K: AdminKind>(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
) -> ApiResult<Envelope<Vec<Stored<K>>>> {
    let client = state.db.get().await?;
    db::tenants::get(&client, &ccid).await?;
    Ok(Envelope::ok(store::list::<K>(&client, &ccid).await?))
}

/// Result of a deletion.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// The deleted object's name.
    pub name: String,
}

async fn remove<K: AdminKind>(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
) -> ApiResult<Envelope<Deleted>> {
    delete_object::<K>(&state, &ccid, &name).await?;
    Ok(Envelope::ok(Deleted { name }))
}

/// Deletes one object (404 when there is none), as `DELETE …/{kind}/{name}` does.
pub async fn delete_object<K: AdminKind>(
    state: &AppState,
    tenant: &str,
    name: &str,
) -> ApiResult<()> {
    let client = state.db.get().await?;
    store::delete::<K>(&client, tenant, name).await?;
    K::changed(state, tenant, name).await;
    Ok(())
}

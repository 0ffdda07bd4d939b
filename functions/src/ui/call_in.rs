//! The Click-To-Call-In page on the configuration side (docs/admin-ui.md#pages,
//! docs/call-in.md): the tenant's groups with their numbers (editable by roles with
//! [`Permission::EditCallIn`], through the admin API's validation and store:
//! `admin::versioned::put_object` / `delete_object`), and the newest requests with their state
//! (live, consumed, expired) until retention deletes them.

use axum::{
    Router,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;
use shared::{
    db::{self, call_in::CallInGroups},
    http::AppState,
};

use super::{
    UiError, page,
    roles::Permission,
    session::{Posted, Session},
};
use crate::admin::versioned::{delete_object, put_object};

/// Requests shown, newest first.
const RECORDS: i64 = 100;

/// The call-in routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/config/call-in", get(show))
        .route("/ges/config/call-in/save", post(save))
        .route("/ges/config/call-in/{name}/delete", post(remove))
}

async fn show(State(state): State<AppState>, s: Session) -> Result<Response, UiError> {
    s.require(Permission::ViewConfig)?;
    let client = state.db.get().await?;
    let groups = db::versioned::list::<CallInGroups>(&client, &s.tenant).await?;
    let records = db::call_in::recent(&client, &s.tenant, RECORDS).await?;
    let groups: Vec<_> = groups
        .iter()
        .map(|g| {
            minijinja::context! {
                name => g.name, version => g.version, updated_at => g.updated_at,
                numbers => g.body.numbers, numbers_text => g.body.numbers.join("\n"),
                access_codes => g.body.access_codes, code_length => g.body.code_length,
                lifetime_seconds => g.body.lifetime_seconds,
            }
        })
        .collect();
    let ctx = minijinja::context! {
        groups => groups,
        records => records,
        editable => s.may(Permission::EditCallIn),
    };
    page("call_in.html", Some(&s), ctx)
}

/// The group form: numbers one per line (or separated by commas).
#[derive(Deserialize)]
struct GroupForm {
    name: String,
    numbers: String,
    #[serde(default)]
    access_codes: Option<String>,
    code_length: String,
    lifetime_seconds: String,
}

fn whole(field: &str, value: &str) -> Result<u64, UiError> {
    value
        .trim()
        .parse()
        .map_err(|_| UiError::BadRequest(format!("{field} must be a whole number")))
}

/// `POST /ges/config/call-in/save`: creates or replaces a group.
async fn save(
    State(state): State<AppState>,
    posted: Posted<GroupForm>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::EditCallIn)?;
    let f = &posted.form;
    let numbers: Vec<&str> = f
        .numbers
        .split(['\n', ','])
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let body = json!({
        "numbers": numbers,
        "access_codes": f.access_codes.is_some(),
        "code_length": whole("code length", &f.code_length)?,
        "lifetime_seconds": whole("lifetime", &f.lifetime_seconds)?,
    });
    put_object::<CallInGroups>(&state, &s.tenant, f.name.trim(), body).await?;
    Ok(Redirect::to("/ges/config/call-in").into_response())
}

#[derive(Deserialize)]
struct Empty {}

/// `POST /ges/config/call-in/{name}/delete`: live requests stay matchable until they expire.
async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::EditCallIn)?;
    delete_object::<CallInGroups>(&state, &s.tenant, &name).await?;
    Ok(Redirect::to("/ges/config/call-in").into_response())
}

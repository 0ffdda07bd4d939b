//! The Callbacks page's forms (docs/admin-ui.md#callbacks): create, reschedule, cancel and
//! bulk cancel (selected ids, or every callback matching the grid's filters, a dry-run count
//! shown before the confirmation). Each is a [`Posted`] form (CSRF checked), requires
//! [`Permission::ManageCallbacks`], and goes through the same domain functions as the public
//! and admin APIs: `callbacks::create::create` and `admin::callbacks::actions`.

use std::collections::HashMap;

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::{
    http::{AppState, extract::from_value},
    model::{
        admin_query::FILTER_KEYS,
        availability::{Zone, parse_time},
        callback::wire_time,
    },
};

use super::{
    UiError,
    callbacks::{actor, query_string},
    page,
    roles::Permission,
    session::Posted,
};
use crate::admin::callbacks::actions::{self, BulkAnswer, RescheduleBody};

/// The viewer's zone of a form's `tz` field (UTC when empty).
fn zone_of(tz: Option<&str>) -> Result<Zone, UiError> {
    Ok(Zone::from_param(tz)?)
}

/// A form's local desired time (`datetime-local`, or any time the listing takes) as the
/// public API's wire time.
fn desired(raw: &str, zone: &Zone) -> Result<String, UiError> {
    Ok(wire_time(parse_time("desiredTime", raw, zone)?))
}

/// Where an action lands: the callback's detail with a notice, in the viewer's zone.
fn to_detail(id: &str, done: &str, tz: Option<&str>) -> Response {
    let mut q = vec![("done".to_string(), done.to_string())];
    if let Some(tz) = tz.filter(|t| !t.trim().is_empty()) {
        q.push(("tz".into(), tz.to_string()));
    }
    Redirect::to(&format!("/ges/callbacks/{id}?{}", query_string(&q))).into_response()
}

/// The create form.
#[derive(Deserialize)]
pub struct CreateForm {
    service: String,
    phone: String,
    /// Empty: as soon as possible.
    #[serde(default)]
    desired: String,
    #[serde(default)]
    tz: Option<String>,
}

/// `POST /ges/callbacks/create`: a callback as the public create makes one (validation,
/// business hours, capacity, number rules, limits).
pub async fn create(
    State(state): State<AppState>,
    posted: Posted<CreateForm>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::ManageCallbacks)?;
    let f = &posted.form;
    let zone = zone_of(f.tz.as_deref())?;
    let mut body = json!({"serviceName": f.service.trim(), "phoneNumber": f.phone.trim()});
    if !f.desired.trim().is_empty() {
        body["desiredTime"] = json!(desired(&f.desired, &zone)?);
    }
    let parms = from_value(body)?;
    let id = crate::callbacks::create::create(&state, &s.tenant, parms, None).await?;
    Ok(to_detail(&id.to_string(), "created", f.tz.as_deref()))
}

/// The reschedule form.
#[derive(Deserialize)]
pub struct RescheduleForm {
    desired: String,
    #[serde(default)]
    tz: Option<String>,
}

/// `POST /ges/callbacks/{id}/reschedule`: as the v3 reschedule extension.
pub async fn reschedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<RescheduleForm>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::ManageCallbacks)?;
    let f = &posted.form;
    let zone = zone_of(f.tz.as_deref())?;
    if f.desired.trim().is_empty() {
        return Err(UiError::BadRequest("give the new desired time".into()));
    }
    let body = RescheduleBody {
        desired_time: Some(desired(&f.desired, &zone)?),
        user_data: None,
    };
    let done = actions::reschedule_one(&state, &actor(s), &s.tenant, &id, body).await?;
    Ok(to_detail(&done.id, "rescheduled", f.tz.as_deref()))
}

/// The cancel form.
#[derive(Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    tz: Option<String>,
}

/// `POST /ges/callbacks/{id}/cancel`: as the public cancel.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<CancelForm>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::ManageCallbacks)?;
    let done = actions::cancel_one(&state, &actor(s), &s.tenant, &id).await?;
    Ok(to_detail(&done.id, "cancelled", posted.form.tz.as_deref()))
}

/// A bulk cancel form: `sel_<id>` fields (selected rows) or the grid's filter fields, `tz`,
/// `confirm=yes` to cancel (else a dry run), `total` the running count of earlier rounds.
pub async fn bulk(
    State(state): State<AppState>,
    posted: Posted<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::ManageCallbacks)?;
    let form = &posted.form;
    let ids: Vec<Value> = form
        .keys()
        .filter_map(|k| k.strip_prefix("sel_"))
        .map(|id| json!(id))
        .collect();
    let mut pairs: Vec<(String, String)> = form
        .iter()
        .filter(|(k, v)| {
            !v.trim().is_empty() && (FILTER_KEYS.contains(&k.as_str()) || k.as_str() == "tz")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.sort();
    let by_ids = !ids.is_empty();
    if by_ids {
        // The selection is the filter; the grid's filter fields are not re-applied.
        pairs.retain(|(k, _)| k == "tz");
    } else if pairs.iter().all(|(k, _)| k == "tz") {
        return Err(UiError::BadRequest(
            "select callbacks, or filter the grid first: a bulk cancel of every callback must \
             name a filter (a state, a service, …)"
                .into(),
        ));
    }
    let confirm = form.get("confirm").is_some_and(|v| v == "yes");
    if !confirm {
        pairs.push(("dryRun".into(), "true".into()));
    }
    let answer = actions::bulk(&state, &actor(s), &s.tenant, &pairs, by_ids.then_some(ids)).await?;
    pairs.retain(|(k, _)| k != "dryRun");
    let before: usize = form.get("total").and_then(|t| t.parse().ok()).unwrap_or(0);
    bulk_page(s, form, &pairs, &answer, before)
}

fn bulk_page(
    s: &super::session::Session,
    form: &HashMap<String, String>,
    pairs: &[(String, String)],
    answer: &BulkAnswer,
    before: usize,
) -> Result<Response, UiError> {
    let mut selected: Vec<&str> = form.keys().filter_map(|k| k.strip_prefix("sel_")).collect();
    selected.sort_unstable();
    let failed: Vec<_> = answer
        .results
        .iter()
        .filter(|r| r.outcome != "CANCELLED")
        .collect();
    let ctx = minijinja::context! {
        dry_run => answer.dry_run,
        matched => answer.matched,
        cancelled => answer.cancelled,
        // `before` is the client's (a hidden field): never trusted to leave room for a sum.
        total => before.saturating_add(answer.cancelled),
        more => answer.more,
        failed => failed,
        selected => selected,
        pairs => pairs,
        back => query_string(pairs),
    };
    page("bulk_cancel.html", Some(s), ctx)
}

//! `POST /engagement/v3/callbacks/reschedule` (an Engage extension: GES v3 has no reschedule)
//! and [`reschedule`], the one implementation of "change a callback's desired time and
//! properties" that this route and the GMS `PUT` share (docs/voice-platform.md#reschedule).
//!
//! A new desired time goes through the checks of a create ([`super::create::admit`]: the
//! service takes scheduled callbacks, the time is in range, in business hours, its slot open);
//! then one transaction locks the row, refuses what may no longer move (COMPLETED, or already
//! with the voice platform: 409), fences the old time's hand-off when a worker may be doing it
//! right now (due within the hour), gives back the old slot place and claims the new one (a
//! full slot rolls both back: 429 with proposals), bumps the hand-off epoch and writes the new
//! times and user data. After the commit the schedule index gets the new time; a failed index
//! write is counted and the worker's sweep repairs it (docs/derived-state.md).
//!
//! Bounded like cancel (docs/bounded-answers.md): the transaction runs in a task of its own;
//! given up before the `COMMIT` is sent it rolls back (503, nothing changed); given up while
//! the `COMMIT` is in flight the 503 says the change may still apply, and the task does the
//! follow-ups if it did.

use axum::{Router, extract::State, routing::post};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::{
    db::{
        self,
        callbacks::Admission,
        outcome::{self, TxFail as Fail, Waited, Writer},
        reschedule::{Locked, NewTime},
        slots::{Alternatives, SlotRefusal},
    },
    error::{Error, Result},
    http::{ApiResult, ApiTenant, AppState, Envelope, Json},
    model::{
        SlotPlan,
        callback::{CallbackIdParms, parse_time, wire_time},
        user_data::is_identifier,
    },
    redis::{schedule, voice},
};
use uuid::Uuid;

use super::create::admit::{self, Booked};

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/callbacks/reschedule", post(handler))
}

/// The largest user data a callback may hold after an update (its JSON, in bytes): the public
/// port's body limit, so an update never stores more than one create could.
pub const MAX_USER_DATA: usize = 500_000;

/// Body of the v3 extension: the callback, its new desired time and/or user-data changes
/// (`null` removes a key, any other value sets it).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RescheduleParms {
    /// The id create returned.
    pub id: Option<String>,
    /// The new desired time (RFC 3339 with an offset).
    pub desired_time: Option<String>,
    /// Keys to set (any JSON value) or remove (`null`).
    pub user_data: Option<Value>,
}

/// The 200 `data` of the extension.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RescheduledData {
    /// The callback's id.
    pub id: String,
    /// Its desired time now (`2026-05-28T15:30:00.000Z`); absent when only properties changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_time: Option<String>,
}

/// What to change on one callback (at least one part).
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// The new desired time, if it moves.
    pub desired_time: Option<Timestamp>,
    /// User-data keys to add or replace.
    pub set: Map<String, Value>,
    /// User-data keys to remove.
    pub remove: Vec<String>,
}

impl Change {
    /// 400 when it changes nothing or names a key that cannot be user data.
    pub fn check(&self) -> Result<()> {
        if self.desired_time.is_none() && self.set.is_empty() && self.remove.is_empty() {
            return Err(Error::invalid(
                "nothing to change: give a new desired time or properties to set or remove",
            ));
        }
        let keys = self.set.keys().chain(self.remove.iter());
        if let Some(bad) = keys.into_iter().find(|k| !is_identifier(k)) {
            let bad: String = bad.chars().take(64).collect();
            return Err(Error::invalid(format!(
                "property {bad:?} is not a valid name (letters, digits, _ and $, not starting \
                 with a digit, not a reserved word)"
            )));
        }
        Ok(())
    }

    /// `current` with the change's properties applied; 400 when the result is too large.
    fn merged(&self, current: &Map<String, Value>) -> Result<Map<String, Value>> {
        let mut out = current.clone();
        out.extend(self.set.clone());
        for k in &self.remove {
            out.remove(k);
        }
        if serde_json::to_vec(&out).map_or(0, |v| v.len()) > MAX_USER_DATA {
            return Err(Error::invalid(format!(
                "the callback's properties would exceed {MAX_USER_DATA} bytes"
            )));
        }
        Ok(out)
    }
}

impl Change {
    /// The change of a v3 extension body (and the admin API's): the new desired time, and
    /// `userData` keys to set (any value) or remove (`null`).
    pub fn from_v3(desired_time: Option<Timestamp>, user_data: Option<Value>) -> Result<Self> {
        let mut change = Self {
            desired_time,
            ..Self::default()
        };
        match user_data {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::Null => change.remove.push(k),
                        v => {
                            change.set.insert(k, v);
                        }
                    }
                }
            }
            Some(_) => return Err(Error::invalid("userData must be a JSON object")),
        }
        Ok(change)
    }

    /// The change a GMS `PUT …/callback/{service}/{id}` body asks for (docs/gms.md#reschedule-and-update):
    /// `_new_desired_time` or `_desired_time` (equal when both) moves it; other keys without a
    /// leading `_` set a property, `""` removes it; other `_` keys are ignored.
    pub fn from_gms(fields: &Map<String, Value>) -> Result<Self> {
        let time = |k: &str| match fields.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => parse_time(k, s.trim()).map(Some),
            Some(_) => Err(Error::invalid(format!("{k} must be an ISO-8601 time"))),
        };
        let (new, old) = (time("_new_desired_time")?, time("_desired_time")?);
        if let (Some(a), Some(b)) = (new, old)
            && a != b
        {
            return Err(Error::invalid(
                "_new_desired_time and _desired_time differ; send one of them",
            ));
        }
        let mut change = Self {
            desired_time: new.or(old),
            ..Self::default()
        };
        for (k, v) in fields.iter().filter(|(k, _)| !k.starts_with('_')) {
            match v {
                Value::String(s) if s.is_empty() => change.remove.push(k.clone()),
                v => {
                    change.set.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(change)
    }
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Json(body): Json<RescheduleParms>,
) -> ApiResult<Envelope<RescheduledData>> {
    let id = CallbackIdParms { id: body.id }.parse()?;
    let time = body
        .desired_time
        .as_deref()
        .map(|t| parse_time("desiredTime", t.trim()))
        .transpose()?;
    let change = Change::from_v3(time, body.user_data)?;
    let done = reschedule(&state, &tenant, id, change).await?;
    Ok(Envelope::ok(RescheduledData {
        id: id.to_string(),
        desired_time: done.desired_time.map(wire_time),
    }))
}

/// What a committed change did.
#[derive(Debug, Clone, Copy)]
pub struct Changed {
    /// The new desired time, when it moved.
    pub desired_time: Option<Timestamp>,
}

/// Where a move goes, decided before the transaction (the create's checks).
#[derive(Debug, Clone)]
struct Target {
    to: NewTime,
    plan: SlotPlan,
    max_days_ahead: u16,
    tenant: String,
    service: String,
    now: Timestamp,
}

impl Target {
    /// The refusal of the slot starting `start`, with proposals read on `db`.
    async fn refuse(
        &self,
        db: &deadpool_postgres::Object,
        start: Timestamp,
        why: SlotRefusal,
    ) -> Error {
        let alt = Alternatives {
            tenant: &self.tenant,
            service: &self.service,
            plan: &self.plan,
            max_days_ahead: self.max_days_ahead,
            desired: self.to.desired,
            now: self.now,
        };
        alt.refuse(db, start, why).await
    }
}

/// Applies `change` to callback `id` of `tenant`: committed when this returns `Ok`.
pub async fn reschedule(
    state: &AppState,
    tenant: &str,
    id: Uuid,
    change: Change,
) -> Result<Changed> {
    change.check()?;
    let target = match change.desired_time {
        Some(t) => Some(target(state, tenant, id, t).await?),
        None => None,
    };
    let client = state.db.get().await?;
    shared::http::envelope::committing();
    let deadline = shared::http::envelope::commit_deadline();
    let (writer, waiter) = outcome::pair();
    let job = Job {
        state: state.clone(),
        tenant: tenant.to_string(),
        id,
        change,
        target,
    };
    tokio::spawn(job.run(client, writer));
    match waiter.wait(deadline).await {
        Waited::Done(answer) => answer,
        Waited::DoneLate { stored: true } => Ok(Changed { desired_time: None }),
        Waited::Abandoned | Waited::DoneLate { stored: false } => Err(Error::unavailable(
            "the database did not answer in time; the callback was not changed, retry later",
        )),
        Waited::InDoubt => Err(Error::unavailable(
            "the database did not confirm the change in time; it may still apply: retry to \
             learn the outcome",
        )),
    }
}

/// The create's checks of a new desired time on the callback's service: in range, in business
/// hours, its slot open (400 / 429 with proposals), and the slot place to claim.
async fn target(state: &AppState, tenant: &str, id: Uuid, t: Timestamp) -> Result<Target> {
    let client = state.db.get().await?;
    let name = db::callbacks::get(&client, tenant, id).await?.service;
    let service = state.service(tenant, &name).await?.ok_or_else(|| {
        Error::conflict(format!(
            "service {name} of callback {id} no longer exists; it cannot be rescheduled"
        ))
    })?;
    let settings = &service.body;
    let now = Timestamp::now();
    let admission = admit::scheduled(t, &name, settings, now)?;
    let plan = db::hours::plan(&client, tenant, &name, settings).await?;
    let booked = admit::book_on(admission, (&name, false), settings, Some(&plan), now)?;
    let mut target = Target {
        to: NewTime {
            desired: t,
            dispatch_at: t,
            slot: None,
        },
        plan,
        max_days_ahead: settings.max_days_ahead,
        tenant: tenant.to_string(),
        service: name,
        now,
    };
    match booked {
        Booked::Admitted(Admission::Scheduled {
            desired,
            dispatch_at,
            slot,
        }) => {
            target.to = NewTime {
                desired,
                dispatch_at,
                slot,
            };
            Ok(target)
        }
        Booked::Admitted(Admission::Immediate) => Err(Error::internal(anyhow::anyhow!(
            "a desired time admitted as immediate"
        ))),
        Booked::Closed { start } => Err(target.refuse(&client, start, SlotRefusal::Closed).await),
    }
}

/// One change, owned by its task.
struct Job {
    state: AppState,
    tenant: String,
    id: Uuid,
    change: Change,
    target: Option<Target>,
}

/// What the transaction committed.
#[derive(Debug, Clone, Copy)]
struct Committed {
    /// The stored dispatch time of a move (the epoch when only resolved afterwards: due at
    /// once, and the worker moves it to the row's time).
    dispatch_at: Option<Timestamp>,
}

/// What the transaction saw before it changed anything (to resolve a broken `COMMIT` and to
/// end a fence).
#[derive(Debug, Clone, Default)]
struct Before {
    /// The attempt and hand-off epoch a move started from.
    moved_from: Option<(i16, i16)>,
    /// The fence set on that hand-off, if any.
    fenced: bool,
    /// The user data the change writes.
    user_data: Map<String, Value>,
}

impl Job {
    /// The transaction, committed only while the request waits, then its follow-ups (done
    /// here also when the request gave up and the change landed after all).
    async fn run(self, mut client: deadpool_postgres::Object, writer: Writer<Result<Changed>>) {
        let mut before = Before::default();
        let result = match self.in_tx(&mut client, &writer, &mut before).await {
            Err(Fail::InDoubt(e)) => {
                tracing::warn!(callback.id = %self.id, error = %e, "reschedule commit outcome unknown; resolving");
                drop(client);
                self.resolve(&before).await
            }
            Err(Fail::Api(e)) => Err(e),
            Ok(c) => Ok(c),
        };
        if before.fenced {
            self.end_fence(&before, result.is_ok()).await;
        }
        let answered = writer.settle(result.is_ok());
        if let Ok(Committed {
            dispatch_at: Some(at),
        }) = &result
        {
            let entry = (self.id, at.as_millisecond());
            schedule::index_committed(&self.state.redis, &self.state.keys, &[entry]).await;
        }
        if answered {
            let desired_time = self.target.as_ref().map(|t| t.to.desired);
            writer.send(result.map(|_| Changed { desired_time }));
        }
    }

    async fn in_tx(
        &self,
        client: &mut deadpool_postgres::Object,
        writer: &Writer<Result<Changed>>,
        before: &mut Before,
    ) -> std::result::Result<Committed, Fail> {
        let tx = client.transaction().await?;
        let row = db::reschedule::lock(&tx, &self.tenant, self.id).await?;
        before.user_data = self.change.merged(&row.user_data)?;
        let mut dispatch_at = None;
        if let Some(target) = &self.target {
            row.movable(self.id)?;
            before.moved_from = Some((row.attempt, row.epoch));
            let claimed = target
                .to
                .slot
                .map(|s| (s.start, i16::try_from(s.minutes).unwrap_or(i16::MAX)));
            let scope = (self.tenant.as_str(), row.service.as_str());
            db::reschedule::lock_counters(&tx, scope, row.slot, claimed).await?;
            db::reschedule::release_slot(&tx, self.id).await?;
            let who = (self.tenant.as_str(), row.service.as_str(), self.id);
            let Some(at) = db::reschedule::move_to(&tx, who, &target.to).await? else {
                tx.rollback().await?;
                let start = target.to.slot.map_or(target.to.desired, |s| s.start);
                return Err(Fail::Api(
                    target.refuse(client, start, SlotRefusal::Full).await,
                ));
            };
            dispatch_at = Some(at);
        } else {
            row.changeable(self.id)?;
        }
        if !self.change.set.is_empty() || !self.change.remove.is_empty() {
            db::reschedule::set_user_data(&tx, self.id, &before.user_data).await?;
        }
        // Last before the commit: a fence is lifted again if the commit does not happen.
        if self.target.is_some() && row.due_soon {
            before.fenced = self.fence(&row).await?;
        }
        if !writer.begin_commit() {
            tx.rollback().await?;
            return Err(Fail::Api(Error::unavailable("request given up")));
        }
        match tx.commit().await {
            Ok(()) => Ok(Committed { dispatch_at }),
            Err(e) if outcome::in_doubt(&e) => Err(Fail::InDoubt(e)),
            Err(e) => Err(e.into()),
        }
    }

    /// Fences the current hand-off of a callback due soon (a worker may be writing it now):
    /// `Ok(true)` fenced, 409 when it was written already, 503 when the voice Redis cannot say.
    async fn fence(&self, row: &Locked) -> Result<bool> {
        let handoff = (row.attempt, row.epoch);
        let fenced = async {
            let mut conn = voice::writer(&self.state.voice, &self.state.cfg.voice).await?;
            voice::fence_for_move(&mut conn, &self.state.cfg.voice, self.id, handoff).await
        }
        .await;
        match fenced {
            Ok(true) => Ok(true),
            Ok(false) => Err(Error::conflict(format!(
                "callback {} is being handed to the voice platform; it can no longer be rescheduled",
                self.id
            ))),
            Err(e) => {
                tracing::warn!(callback.id = %self.id, error = %e, "fencing a hand-off for a reschedule failed");
                Err(Error::unavailable(
                    "cannot stop the callback's hand-off to the voice platform (voice Redis \
                     unreachable or its replicas behind); it was not rescheduled, retry later",
                ))
            }
        }
    }

    /// Keeps the fence of a committed move (the old time never goes out) or lifts it after a
    /// rollback (the callback goes out at its time). Failing, the fence ends by itself after
    /// `MOVE_FENCE_TTL_S`.
    async fn end_fence(&self, before: &Before, committed: bool) {
        let Some(handoff) = before.moved_from else {
            return;
        };
        let ended = async {
            let mut conn = self.state.voice.conn().await?;
            let stream = &self.state.cfg.voice.stream;
            voice::end_move_fence(&mut conn, stream, self.id, handoff, committed).await
        }
        .await;
        if let Err(e) = ended {
            tracing::warn!(callback.id = %self.id, committed, error = %e, "ending a reschedule fence failed; it expires by itself");
        }
    }

    /// After a broken `COMMIT`: whether the change landed, read under the row lock. Retries
    /// until PostgreSQL answers.
    async fn resolve(&self, before: &Before) -> Result<Committed> {
        let mut delay = std::time::Duration::from_millis(100);
        let from = before.moved_from.map(|(_, e)| e);
        loop {
            let read = async {
                let mut client = self.state.db.get().await?;
                let tx = client.transaction().await?;
                let landed = db::reschedule::landed(&tx, self.id, from, &before.user_data).await;
                tx.rollback().await?;
                landed
            }
            .await;
            match read {
                Ok(true) => {
                    let dispatch_at = from.map(|_| Timestamp::UNIX_EPOCH);
                    return Ok(Committed { dispatch_at });
                }
                Ok(false) => {
                    return Err(Error::unavailable(
                        "database connection lost; the callback was not changed, retry later",
                    ));
                }
                Err(e) => {
                    tracing::warn!(callback.id = %self.id, error = %e, "reschedule outcome not resolved yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn gms(v: Value) -> Result<Change> {
        let Value::Object(m) = v else { panic!() };
        Change::from_gms(&m)
    }

    #[test]
    fn a_gms_put_body_becomes_one_change() {
        let c = gms(
            json!({"_new_desired_time": "2030-05-28T15:30:00.000Z", "_callback_state": "QUEUED",
            "orderId": "A-17", "gone": ""}),
        )
        .unwrap();
        assert_eq!(
            c.desired_time,
            Some("2030-05-28T15:30:00Z".parse().unwrap())
        );
        assert_eq!(
            c.set,
            json!({"orderId": "A-17"}).as_object().unwrap().clone()
        );
        assert_eq!(c.remove, vec!["gone".to_string()]);
        let qa = gms(json!({"_desired_time": "2030-05-28T15:30:00.000Z"})).unwrap();
        assert!(
            qa.desired_time.is_some(),
            "GMS QA's _desired_time reschedules too"
        );
        let both = json!({"_desired_time": "2030-05-28T15:30:00Z", "_new_desired_time": "2030-05-28T16:00:00Z"});
        assert!(gms(both).is_err());
        assert!(gms(json!({"_new_desired_time": "soon"})).is_err());
        assert!(
            gms(json!({"_callback_state": "QUEUED"}))
                .unwrap()
                .check()
                .is_err(),
            "nothing to change"
        );
        assert!(gms(json!({"bad key": 1})).unwrap().check().is_err());
    }

    #[test]
    fn merged_properties_are_bounded() {
        let c = Change {
            set: json!({"big": "x".repeat(MAX_USER_DATA)})
                .as_object()
                .unwrap()
                .clone(),
            ..Change::default()
        };
        assert!(c.merged(&Map::new()).is_err());
        let c = Change {
            set: json!({"a": 1}).as_object().unwrap().clone(),
            remove: vec!["b".into()],
            ..Change::default()
        };
        let had = json!({"b": 2, "c": 3}).as_object().unwrap().clone();
        assert_eq!(
            Value::Object(c.merged(&had).unwrap()),
            json!({"a": 1, "c": 3})
        );
    }
}

//! Push notifications (docs/push.md): two loops over the PostgreSQL push outbox
//! (`shared::db::push`).
//!
//! - The **watcher** (every `PUSH_WATCH_MS`) reads the waiting callbacks with push targets
//!   that are not yet owed their `CALLBACK_UPCOMING` (one indexed PostgreSQL query; nothing
//!   else while there are none, so an idle worker issues no Redis command for push), asks each
//!   one's estimate of its queue view (`shared::redis::queue::position`: callbacks ahead ×
//!   mean dequeue interval, the numbers retrieve shows), and owes the event once it is below
//!   the service's `push_threshold_minutes`. The row's unique key makes it once per callback,
//!   across restarts and workers; once owed, the callback is no longer watched.
//! - The **sender** (every `PUSH_SEND_MS`) claims due rows under a lease, drops those whose
//!   callback moved on, sends the rest through [`fcm`], and records each outcome:
//!   sent, failed for good (FCM refused the message or token), or due again after a backoff
//!   (1 s doubling to 5 min, or FCM's `Retry-After`) until `PUSH_MAX_TRIES`.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::{
    credentials::FcmCredentials,
    db::push::{self, Claimed, PushEvent, Settle, WatchCursor},
    metrics,
    model::ServiceSettings,
    redis::queue,
};
use tokio_util::sync::CancellationToken;

use crate::{Worker, error::Result};

pub mod fcm;
pub mod jwt;

use fcm::{Account, Delivery, Fcm};

/// Callbacks the watcher looks at per pass, and rows the sender claims per pass.
const BATCH: i64 = 200;
/// Longest backoff between tries of one message.
const MAX_BACKOFF_MS: u64 = 300_000;

/// Runs the watcher and the sender until `stop` fires.
pub async fn run(w: Worker, stop: CancellationToken) {
    let fcm = match Fcm::new(&w.cfg.push) {
        Ok(f) => std::sync::Arc::new(f),
        Err(e) => {
            tracing::error!(error = %e, "push: no HTTP client, push notifications are off");
            return;
        }
    };
    let watch = tokio::spawn(watch_loop(w.clone(), stop.clone()));
    send_loop(w, fcm, stop).await;
    let _ = watch.await;
}

async fn watch_loop(w: Worker, stop: CancellationToken) {
    let every = Duration::from_millis(w.cfg.push.watch_ms);
    let mut cursor = None;
    loop {
        if let Err(e) = watch(&w, &mut cursor).await {
            tracing::warn!(error = %e, "push watch pass failed");
        }
        if crate::sleep_or_stop(every, &stop).await {
            return;
        }
    }
}

/// One watcher pass over the next page of watched callbacks after `cursor` (moved past it, or
/// back to the start after a short page: every watched callback is looked at in turn, however
/// many never get below the threshold); returns how many were newly owed `CALLBACK_UPCOMING`.
pub async fn watch(w: &Worker, cursor: &mut WatchCursor) -> Result<usize> {
    let client = w.db.get().await?;
    let watched = push::watched(&client, *cursor, BATCH).await?;
    *cursor = match watched.last() {
        Some(last) if watched.len() as i64 >= BATCH => Some((last.submitted_at, last.id)),
        _ => None,
    };
    if watched.is_empty() {
        return Ok(0);
    }
    let mut conn = w.redis.conn().await?;
    let mut owed = 0;
    for cb in watched {
        let settings: ServiceSettings = serde_json::from_value(cb.settings).unwrap_or_default();
        let threshold_s = i64::from(settings.push_threshold_minutes) * 60;
        let escalation = queue::Escalation::of(&settings);
        let (position, ewt) = queue::position(
            &mut conn,
            &w.keys,
            &cb.tenant,
            &cb.service,
            cb.id,
            escalation,
        )
        .await?;
        let Some(ewt) = ewt.filter(|e| *e < threshold_s) else {
            continue;
        };
        let data = json!({
            "estimatedWaitTime": ewt.to_string(),
            "positionInQueue": position.map(|p| p.to_string()),
        });
        if push::owe_upcoming(&client, cb.id, &data).await? > 0 {
            owed += 1;
        }
    }
    Ok(owed)
}

async fn send_loop(w: Worker, fcm: std::sync::Arc<Fcm>, stop: CancellationToken) {
    let every = Duration::from_millis(w.cfg.push.send_ms);
    loop {
        match send(&w, &fcm).await {
            // A full batch: more may be due, go again at once.
            Ok(n) if n as i64 >= BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "push send pass failed"),
        }
        if crate::sleep_or_stop(every, &stop).await {
            return;
        }
    }
}

/// One sender pass: claims due rows, sends them concurrently, records each outcome. Returns
/// how many rows it claimed.
pub async fn send(w: &Worker, fcm: &Fcm) -> Result<usize> {
    let lease_ms = w.cfg.push.fcm_timeout_ms.saturating_mul(3) + 5_000;
    let claimed = {
        let client = w.db.get().await?;
        #[allow(clippy::cast_precision_loss)]
        push::claim(&client, BATCH, lease_ms as f64).await?
    };
    let n = claimed.len();
    let outcomes = futures::future::join_all(claimed.iter().map(|c| deliver(w, fcm, c))).await;
    let client = w.db.get().await?;
    for (c, how) in claimed.iter().zip(outcomes) {
        push::settle(&client, c.row, &how).await?;
    }
    Ok(n)
}

/// Sends one claimed row, or says why not.
async fn deliver(w: &Worker, fcm: &Fcm, c: &Claimed) -> Settle {
    let (Some(event), Some(token)) = (c.event, target_token(c)) else {
        return Settle::Dropped("no such event or push target");
    };
    if let Some(why) = moved_on(c, event) {
        return Settle::Dropped(why);
    }
    let creds = match w.vault.fcm(&w.db, &c.tenant).await {
        Ok(Some(a)) => a,
        Ok(None) => return again(w, c, None, "tenant has no FCM credentials".into()),
        Err(e) => return again(w, c, None, format!("credentials unreadable: {e}")),
    };
    let message = message(c, event, &token);
    let delivery = fcm.send(&c.tenant, &account(&creds), &message).await;
    count(&c.tenant, &delivery);
    match delivery {
        Delivery::Sent => Settle::Sent,
        Delivery::Rejected { why } => Settle::Failed(why),
        Delivery::Retry { after, why } => again(w, c, after, why),
    }
}

/// Why a row is no longer worth sending: its callback completed, or moved past the moment.
fn moved_on(c: &Claimed, event: PushEvent) -> Option<&'static str> {
    match event {
        _ if c.state == "COMPLETED" => Some("callback completed"),
        PushEvent::Upcoming if c.state != "QUEUED" => Some("callback no longer waiting"),
        PushEvent::Ready if c.current_attempt != c.attempt => Some("attempt over"),
        _ => None,
    }
}

/// The device token of a row's push target (FCM only).
fn target_token(c: &Claimed) -> Option<String> {
    let t = c.target.as_ref()?;
    (t["channel"].as_str()? == "FCM").then(|| t["target"].as_str().map(str::to_string))?
}

/// The `message` object of `messages:send`: data only (every value a string, as FCM
/// requires); the app decides what to show (docs/push.md#payload).
fn message(c: &Claimed, event: PushEvent, token: &str) -> Value {
    let mut data = json!({
        "event": event.as_str(),
        "callbackId": c.callback.to_string(),
        "serviceName": c.service,
    });
    if event == PushEvent::Ready {
        data["attempt"] = c.attempt.to_string().into();
    }
    if let (Some(d), Some(extra)) = (data.as_object_mut(), c.data.as_object()) {
        for (k, v) in extra {
            if let Some(s) = v.as_str() {
                d.insert(k.clone(), s.into());
            }
        }
    }
    json!({"token": token, "data": data, "android": {"priority": "high"}})
}

/// The next try after `after` (FCM's word) or the backoff, or the end of the tries.
fn again(w: &Worker, c: &Claimed, after: Option<Duration>, why: String) -> Settle {
    let max = i32::try_from(w.cfg.push.max_tries).unwrap_or(i32::MAX);
    if c.tries >= max {
        return Settle::Failed(format!("gave up after {} tries: {why}", c.tries));
    }
    let shift = u32::try_from(c.tries.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let backoff = w.cfg.push.backoff_ms.saturating_mul(1 << shift);
    let ms = after.map_or(backoff, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    });
    Settle::Again(ms.min(MAX_BACKOFF_MS.max(w.cfg.push.backoff_ms)), why)
}

/// `ges_push_notifications_sent` per try, and `NEXUS_ACCESS_FAILURE` when FCM could not be
/// used (docs/push.md#metrics).
fn count(tenant: &str, d: &Delivery) {
    let result = if *d == Delivery::Sent {
        "success"
    } else {
        "failure"
    };
    ::metrics::counter!(metrics::PUSH_SENT, "tenant" => tenant.to_string(), "channel" => "FCM",
        "result" => result)
    .increment(1);
    if let Delivery::Retry { why, .. } = d {
        ::metrics::counter!(metrics::NEXUS_ACCESS_FAILURE).increment(1);
        tracing::warn!(tenant, why = %why, "push: FCM not reached, will retry");
    }
}

/// The sender's view of a tenant's stored service account.
fn account(c: &FcmCredentials) -> Account<'_> {
    Account {
        project_id: &c.project_id,
        signer: jwt::Signer {
            client_email: &c.client_email,
            private_key_id: c.private_key_id.as_deref(),
            private_key_pem: c.private_key.expose_secret(),
            token_uri: &c.token_uri,
        },
    }
}

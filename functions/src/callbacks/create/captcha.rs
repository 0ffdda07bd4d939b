//! CAPTCHA verification of a create whose service has `captcha_required`
//! (docs/credentials.md#captcha): the request's `captchaToken` is checked with the tenant's
//! secret against a reCAPTCHA-compatible `siteverify` endpoint (`CAPTCHA_VERIFY_URL`), before
//! anything is stored or any create-time limit counted.
//!
//! - No token, or `siteverify` says `success: false` (forged, expired, already used, wrong
//!   secret) → 400 naming `captchaToken` and the verifier's error codes.
//! - `siteverify` slower than `CAPTCHA_TIMEOUT_MS`, unreachable, answering 5xx or something
//!   that is not its JSON → 503, never a silent pass.
//! - The tenant has no CAPTCHA secret (or the vault has no `CREDENTIALS_KEY`) → 503: the
//!   service is misconfigured, nothing the caller can fix in the request.
//! - A retry under an Idempotency-Key of a create that succeeded answers that create's id
//!   without a second verification (its token was used once already).

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Deserialize;
use shared::{
    credentials::CaptchaCredentials,
    db,
    db::{
        batch::not_confirmed,
        callbacks::Idempotent,
        outcome::{self, Waited, Writer},
    },
    error::{Error, Result},
};
use uuid::Uuid;

use super::{Ctx, Keyed};

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The token was verified: go on and store.
    Verified,
    /// The Idempotency-Key replays a stored create: answer its id, store nothing.
    Replayed(Uuid),
}

/// The error codes `siteverify` defines; others are not echoed.
const KNOWN_CODES: [&str; 6] = [
    "missing-input-secret",
    "invalid-input-secret",
    "missing-input-response",
    "invalid-input-response",
    "bad-request",
    "timeout-or-duplicate",
];

/// `siteverify`'s answer (other fields ignored).
#[derive(Debug, Deserialize)]
struct Answer {
    success: bool,
    #[serde(rename = "error-codes", default)]
    error_codes: Vec<String>,
}

/// Checks `token` for a create on a service with `captcha_required` (see the module doc).
pub async fn check(
    ctx: &Ctx,
    token: Option<&str>,
    keyed: Option<&Keyed>,
    of: Of<'_>,
) -> Result<Checked> {
    if let Some(id) = replayed(ctx, keyed, of).await? {
        return Ok(Checked::Replayed(id));
    }
    let Some(token) = token else {
        return Err(Error::invalid(format!(
            "captchaToken is required by service {}",
            ctx.name()
        )));
    };
    let state = &ctx.state;
    let Some(creds) = state.vault.captcha(&state.db, &ctx.tenant).await? else {
        return Err(Error::unavailable(format!(
            "service {} requires a CAPTCHA but no CAPTCHA secret is configured for this \
             tenant (docs/credentials.md#captcha)",
            ctx.name()
        )));
    };
    let answer = siteverify(ctx, &creds, token).await?;
    if answer.success {
        return Ok(Checked::Verified);
    }
    let codes: Vec<&str> = answer
        .error_codes
        .iter()
        .map(String::as_str)
        .filter(|c| KNOWN_CODES.contains(c))
        .collect();
    Err(Error::invalid(match codes.is_empty() {
        true => "captchaToken was refused by CAPTCHA verification".to_string(),
        false => format!(
            "captchaToken was refused by CAPTCHA verification ({})",
            codes.join(", ")
        ),
    }))
}

/// The stored create an Idempotency-Key replays (same body), if any, its mark committed (and
/// the callback admitted again when it is not counted: [`super::limits::readmit`]); 409 for
/// another body. The transaction runs in a task of its own and commits only while the request
/// still waits (as the create's own replay), so that a request given up at its deadline marks
/// nothing and gives back a readmission.
async fn replayed(ctx: &Ctx, keyed: Option<&Keyed>, of: Of<'_>) -> Result<Option<Uuid>> {
    let Some(k) = keyed else {
        return Ok(None);
    };
    let (ctx, key, hash) = (ctx.clone(), k.key.clone(), k.hash);
    let (number, immediate) = (of.0.clone(), of.1);
    shared::http::envelope::committing();
    let deadline = shared::http::envelope::commit_deadline();
    let (writer, waiter) = outcome::pair();
    tokio::spawn(async move {
        let found = mark(&ctx, (&key, &hash), (&number, immediate), &writer).await;
        if writer.settle(false) {
            writer.send(found);
        }
    });
    match waiter.wait(deadline).await {
        Waited::Done(found) => found,
        Waited::DoneLate { .. } | Waited::Abandoned | Waited::InDoubt => Err(not_confirmed()),
    }
}

/// [`replayed`]'s transaction.
async fn mark(
    ctx: &Ctx,
    (key, hash): (&str, &[u8]),
    of: Of<'_>,
    writer: &Writer<Result<Option<Uuid>>>,
) -> Result<Option<Uuid>> {
    let mut client = ctx.state.db.get().await?;
    let tx = client.transaction().await?;
    let id = match db::callbacks::earlier_use(&tx, &ctx.tenant, key, hash).await? {
        Some(Idempotent::Replayed(id)) => id,
        Some(Idempotent::Mismatch) => {
            return Err(Error::conflict(
                "Idempotency-Key was already used with a different request body",
            ));
        }
        None => return Ok(None),
    };
    let readmitted = super::limits::readmit(ctx, &tx, of.0, (id, of.1)).await?;
    let committed = if writer.begin_commit() {
        tx.commit().await.map_err(Error::from)
    } else {
        tx.rollback().await?;
        Err(not_confirmed())
    };
    if let Err(e) = committed {
        // Not marked, or in doubt: a withdrawal that keeps it counts it again.
        if let Some(r) = readmitted {
            r.give_back(&ctx.state).await;
        }
        return Err(e);
    }
    Ok(Some(id))
}

/// The create a CAPTCHA check is for: its number, and whether it is immediate.
pub type Of<'a> = (&'a super::limits::Number, bool);

/// One `siteverify` call: `POST secret=…&response=…` (form), JSON answer.
async fn siteverify(ctx: &Ctx, creds: &CaptchaCredentials, token: &str) -> Result<Answer> {
    let cfg = &ctx.state.cfg.captcha;
    let unavailable = |cause: String| Error::Unavailable {
        message: "CAPTCHA verification is unavailable, retry later".into(),
        cause: Some(cause),
    };
    let form = [
        ("secret", creds.secret.expose_secret()),
        ("response", token),
    ];
    let response = crate::outbound::client()?
        .post(&cfg.verify_url)
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .form(&form)
        .send()
        .await
        .map_err(|e| unavailable(format!("CAPTCHA siteverify: {}", e.without_url())))?;
    let status = response.status();
    if !status.is_success() {
        return Err(unavailable(format!("CAPTCHA siteverify answered {status}")));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| unavailable(format!("CAPTCHA siteverify body: {}", e.without_url())))?;
    serde_json::from_slice(&body)
        .map_err(|e| unavailable(format!("CAPTCHA siteverify answer is not its JSON: {e}")))
}

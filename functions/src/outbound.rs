//! The one HTTP client of a function process for third parties (CAPTCHA `siteverify`, …),
//! built on first use: the system's TLS roots are read then, not at every cold start, and its
//! connections are reused. Callers set their own per-request timeout; redirects are not
//! followed (a third party's answer is the one we asked for).

use std::{sync::OnceLock, time::Duration};

use shared::error::Error;

/// The client, or 503 when it cannot be built (no usable TLS roots; logged).
pub fn client() -> Result<&'static reqwest::Client, Error> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let built = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())
    });
    built.as_ref().map_err(|e| Error::Unavailable {
        message: "an outbound dependency is unavailable, retry later".into(),
        cause: Some(format!("cannot build the outbound HTTP client: {e}")),
    })
}

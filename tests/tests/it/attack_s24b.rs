//! Session 24's attacks (attacker B) on the admin callback query API, the `/ges` admin UI,
//! dispatch pacing and the per-API-key request limit. Each test is an attack that broke
//! something (fixed since) or a battery that tried to and is kept as a guard.

use futures::future::join_all;
use harness::{
    ADMIN_TOKEN, Engage, Fixture, send,
    ui::{csrf_of, form_body, no_redirects},
};
use serde_json::{Value, json};

const BASE: &str = "/ges/v1/tenants";

/// `GET …/callbacks` of `tenant` with `query` pairs: (status, envelope).
async fn list(e: &Engage, tenant: &str, query: &[(&str, &str)]) -> (u16, Value) {
    send(
        e.http
            .get(format!("{}{BASE}/{tenant}/callbacks", e.internal))
            .bearer_auth(ADMIN_TOKEN)
            .query(query),
    )
    .await
}

/// A cursor as the API encodes it (hex of `1|<sort>|<desc>|<µs>|<id>`), with any values.
fn cursor(sort: &str, desc: bool, micros: &str, id: &str) -> String {
    format!("1|{sort}|{}|{micros}|{id}", u8::from(desc))
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A hand-made cursor whose time PostgreSQL cannot store (jiff reaches year -9999, PostgreSQL
/// 4713 BC) answers 400 naming the cursor, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_out_of_postgres_range_is_a_400() {
    let fx = Fixture::start(harness::open_service(json!({}))).await;
    fx.create().in_secs(3600).id().await;
    let id = uuid::Uuid::now_v7().to_string();
    for (sort, desc) in [("desiredTime", false), ("created", true)] {
        for micros in [
            "-377705116800000000",
            "253402207200000000",
            "-62135596800000001",
        ] {
            let c = cursor(sort, desc, micros, &id);
            let order = if desc { "desc" } else { "asc" };
            let (code, body) = list(
                &fx.engage,
                "acme",
                &[("sort", sort), ("order", order), ("cursor", &c)],
            )
            .await;
            assert!(code < 500, "{sort} {micros}: {code} {body}");
        }
    }
}

/// A login form's double-submit pair: (the `Cookie` header value, the form token).
async fn login_form(e: &Engage) -> (String, String) {
    let r = no_redirects()
        .get(format!("{}/ges/login", e.internal))
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|p| p.starts_with("ges_login_csrf="))
        .unwrap()
        .to_string();
    let token = csrf_of(&r.text().await.unwrap()).unwrap();
    (cookie, token)
}

/// One login attempt with a form pair: (status, page text).
async fn attempt(
    e: &Engage,
    (cookie, token): &(String, String),
    user: &str,
    pw: &str,
) -> (u16, String) {
    let r = no_redirects()
        .post(format!("{}/ges/login", e.internal))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("csrf", token),
            ("tenant", "acme"),
            ("username", user),
            ("password", pw),
        ]))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Five wrong passwords lock a user (docs/admin-ui.md#sessions): sent at once, they still get
/// at most five password checks. The lock was read before the checks and written after them,
/// so 30 concurrent guesses were all checked ("Wrong …") and the lock bounded nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_get_at_most_five_checks() {
    let fx = Fixture::start(harness::open_service(json!({}))).await;
    let e = &fx.engage;
    let body = json!({"username": "vic", "password": "correct horse battery", "role": "Monitor"});
    assert_eq!(
        e.admin_post("/ges/v1/tenants/acme/users", body).await.0,
        200
    );
    let form = login_form(e).await;
    let tries = (0..30).map(|i| {
        let form = form.clone();
        async move { attempt(e, &form, "vic", &format!("wrong guess {i}")).await }
    });
    let answers = join_all(tries).await;
    let checked = answers
        .iter()
        .filter(|(code, page)| *code == 401 && page.contains("Wrong tenant"))
        .count();
    let locked = answers
        .iter()
        .filter(|(_, page)| page.contains("locked"))
        .count();
    assert_eq!(checked + locked, 30, "{answers:?}");
    assert!(
        checked <= 5,
        "{checked} of 30 concurrent guesses were checked"
    );
    // The right password is refused while locked.
    let (code, page) = attempt(e, &form, "vic", "correct horse battery").await;
    assert!(code != 303 && page.contains("locked"), "{code} {page}");
}

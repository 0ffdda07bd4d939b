//! The `/ges` Click-To-Call-In page and the Developer page's credentials forms
//! (docs/admin-ui.md#pages): roles, CSRF, tenant scoping, write-only secrets, bad input → 4xx
//! and nothing stored; then an Administrator in Chromium (screenshots 18–19).

use fantoccini::Locator;
use harness::{
    Engage, TestEnv,
    ui::{Browser, csrf_of, ui_login},
};
use serde_json::{Value, json};

use crate::ui::{
    PASSWORD, browser_login, click_through, get, post, shot, text_of, type_into, ui_fixture,
};

/// The admin API's public view of `tenant`'s credentials of `kind`.
async fn cred(e: &Engage, tenant: &str, kind: &str) -> Value {
    let (code, body) = e
        .admin_get(&format!("/ges/v1/tenants/{tenant}/credentials/{kind}"))
        .await;
    assert_eq!(code, 200, "{body}");
    body["data"].clone()
}

fn service_account() -> String {
    json!({"type": "service_account", "project_id": "acme-push", "private_key_id": "kid-1",
        "private_key": harness::fake_fcm::generate_key(),
        "client_email": "push@acme-push.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token"})
    .to_string()
}

/// POSTs `fields` with the session's token `csrf`: the status.
async fn post_with(
    e: &Engage,
    cookie: &str,
    csrf: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let mut pairs = vec![("csrf", csrf)];
    pairs.extend(fields.iter().copied());
    post(e, cookie, path, &pairs).await
}

const SECRET: &str = "s3cr3t-never-shown-0xC0FFEE";

/// Secrets go in and never come out; only Administrator and Developer may write; a form
/// without the token or with bad input stores nothing; a tenant's forms touch its own record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_forms_are_write_only_checked_and_scoped() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    e.tenant("globex").await;
    let dev = ui_login(e, "acme", "dev", PASSWORD).await.unwrap();
    let (code, page) = get(e, &dev, "/ges/developer").await;
    assert_eq!((code, page.matches("Not set").count()), (200, 3), "{page}");
    let csrf = csrf_of(&page).unwrap();
    store_every_kind(e, &dev, &csrf).await;
    bad_credentials_store_nothing(e, &dev, &csrf).await;
    // Roles and the token.
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let sue_csrf = csrf_of(&get(e, &sue, "/ges/queues").await.1).unwrap();
    let (set, delete) = (
        "/ges/developer/credentials/captcha",
        "/ges/developer/credentials/captcha/delete",
    );
    let secret = [("secret", "x")];
    assert_eq!(post_with(e, &sue, &sue_csrf, set, &secret).await.0, 403);
    assert_eq!(post_with(e, &sue, &sue_csrf, delete, &[]).await.0, 403);
    assert_eq!(post(e, &dev, delete, &[]).await.0, 403, "no token");
    assert_eq!(cred(e, "acme", "captcha").await["configured"], true);
    assert_eq!(post_with(e, &dev, &csrf, delete, &[]).await.0, 303);
    assert_eq!(cred(e, "acme", "captcha").await["configured"], false);
}

/// Each kind's form stores the tenant's record; the page shows public fields only.
async fn store_every_kind(e: &Engage, dev: &str, csrf: &str) {
    let sa = service_account();
    let forms: [(&str, Vec<(&str, &str)>); 3] = [
        ("captcha", vec![("secret", SECRET), ("siteKey", "site-1")]),
        ("fcm", vec![("service_account", &sa)]),
        (
            "gws",
            vec![
                ("clientId", "cid-1"),
                ("clientSecret", SECRET),
                ("authUrl", "https://gws.example/token"),
                ("statisticsUrl", "https://gws.example/stats"),
            ],
        ),
    ];
    for (kind, fields) in &forms {
        let path = format!("/ges/developer/credentials/{kind}");
        let mut pairs = vec![("csrf", csrf)];
        pairs.extend(fields.iter().copied());
        let (code, body) = post(e, dev, &path, &pairs).await;
        assert_eq!(code, 303, "{kind}: {body}");
        assert_eq!(cred(e, "acme", kind).await["configured"], true);
        assert_eq!(cred(e, "globex", kind).await["configured"], false);
    }
    let (_, page) = get(e, dev, "/ges/developer").await;
    assert!(page.contains("site-1") && page.contains("acme-push") && page.contains("cid-1"));
    assert!(
        !page.contains(SECRET) && !page.contains("PRIVATE KEY"),
        "a secret shown"
    );
    assert_eq!(page.matches("Set at").count(), 3);
}

/// Bad input: 4xx naming the problem, never the secret; the stored record unchanged.
async fn bad_credentials_store_nothing(e: &Engage, dev: &str, csrf: &str) {
    let long = "k".repeat(5000);
    let bad: [(&str, Vec<(&str, &str)>); 6] = [
        ("fcm", vec![("service_account", "not json")]),
        (
            "fcm",
            vec![("service_account", r#"{"type":"service_account"}"#)],
        ),
        ("captcha", vec![("siteKey", "site-2")]),
        ("captcha", vec![("secret", SECRET), ("siteKey", &long)]),
        (
            "gws",
            vec![
                ("clientId", "c"),
                ("clientSecret", SECRET),
                ("authUrl", "nota url"),
                ("statisticsUrl", "x"),
            ],
        ),
        ("nope", vec![("secret", SECRET)]),
    ];
    for (kind, fields) in &bad {
        let path = format!("/ges/developer/credentials/{kind}");
        let (code, body) = post_with(e, dev, csrf, &path, fields).await;
        assert!((400..500).contains(&code), "{kind}: {code} {body}");
        assert!(!body.contains(SECRET), "{kind}: the secret echoed");
    }
    assert_eq!(cred(e, "acme", "captcha").await["siteKey"], "site-1");
}

/// The group form's fields.
fn group(numbers: &'static str, len: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("name", "Support"),
        ("numbers", numbers),
        ("access_codes", "on"),
        ("code_length", len),
        ("lifetime_seconds", "300"),
    ]
}

const SAVE: &str = "/ges/config/call-in/save";
const SUPPORT: &str = "/ges/v1/tenants/acme/call-in-groups/Support";

/// Groups are edited through the admin API's validation (numbers normalised, one group per
/// number across tenants), Supervisors read, Monitors are refused, and the requests show up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_in_page_edits_groups_and_lists_requests() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    e.tenant("globex").await;
    let theirs = json!({"numbers": ["+16505550199"]});
    let path = "/ges/v1/tenants/globex/call-in-groups/Theirs";
    assert_eq!(e.admin_put(path, theirs).await.0, 201);
    let ada = ui_login(e, "acme", "ada", PASSWORD).await.unwrap();
    let (code, page) = get(e, &ada, "/ges/config/call-in").await;
    assert_eq!(code, 200);
    assert!(!page.contains("Theirs") && !page.contains("+16505550199"));
    let csrf = csrf_of(&page).unwrap();
    bad_groups_are_refused(e, &ada, &csrf).await;
    let fields = group("+1 650 555 0100\n(650) 555-0101", "4");
    assert_eq!(post_with(e, &ada, &csrf, SAVE, &fields).await.0, 303);
    let (_, g) = e.admin_get(SUPPORT).await;
    let numbers = json!(["+16505550100", "+16505550101"]);
    assert_eq!(g["data"]["numbers"], numbers, "{g}");
    let create = "/engagement/v3/call-in/requests/create";
    let (code, req) = e
        .post(&fx.key, create, json!({"groupName": "Support"}))
        .await;
    assert_eq!(code, 200, "{req}");
    let (_, page) = get(e, &ada, "/ges/config/call-in").await;
    let records = &page[page.find("call-in-records").unwrap()..];
    assert!(records.contains("live") && records.contains("+1650555010"));
    others_may_not_edit(e).await;
    let delete = "/ges/config/call-in/Support/delete";
    assert_eq!(post(e, &ada, delete, &[]).await.0, 403, "no token");
    let theirs = "/ges/config/call-in/Theirs/delete";
    assert_eq!(post_with(e, &ada, &csrf, theirs, &[]).await.0, 404);
    assert_eq!(e.admin_get(path).await.0, 200, "globex's group stays");
    assert_eq!(post_with(e, &ada, &csrf, delete, &[]).await.0, 303);
    assert_eq!(e.admin_get(SUPPORT).await.0, 404);
}

/// Bad group forms: 4xx (409 for a number pooled by another tenant), nothing stored.
async fn bad_groups_are_refused(e: &Engage, ada: &str, csrf: &str) {
    let bad_name = vec![
        ("name", "bad/name"),
        ("numbers", "+16505550100"),
        ("code_length", "4"),
        ("lifetime_seconds", "1"),
    ];
    for (fields, expect) in [
        (group("", "4"), 400),
        (group("+1 650 555 0100", "x"), 400),
        (group("+1 650 555 0100", "12"), 400),
        (group("not a number", "4"), 400),
        (group("+1 650 555 0199", "4"), 409),
        (bad_name, 400),
        (vec![("name", "Support")], 400),
    ] {
        let (code, body) = post_with(e, ada, csrf, SAVE, &fields).await;
        assert_eq!(code, expect, "{fields:?}: {body}");
    }
    assert_eq!(e.admin_get(SUPPORT).await.0, 404);
}

/// A Supervisor reads the page but may not save or delete; a Monitor may not read it.
async fn others_may_not_edit(e: &Engage) {
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let (code, page) = get(e, &sue, "/ges/config/call-in").await;
    assert!(code == 200 && page.contains("Read-only") && !page.contains(SAVE));
    let csrf = csrf_of(&page).unwrap();
    let fields = group("+16505550102", "4");
    assert_eq!(post_with(e, &sue, &csrf, SAVE, &fields).await.0, 403);
    let delete = "/ges/config/call-in/Support/delete";
    assert_eq!(post_with(e, &sue, &csrf, delete, &[]).await.0, 403);
    let mo = ui_login(e, "acme", "mo", PASSWORD).await.unwrap();
    assert_eq!(get(e, &mo, "/ges/config/call-in").await.0, 403);
    assert_eq!(e.admin_get(SUPPORT).await.0, 200, "unchanged");
}

/// An Administrator adds a call-in group and stores CAPTCHA credentials in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_configures_call_in_and_credentials_in_a_browser() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    let b = Browser::start().await;
    let c = &b.client;
    browser_login(c, e, "ada", PASSWORD).await;
    click_through(c, Locator::LinkText("Call-in")).await;
    type_into(c, "n-name", "Support").await;
    type_into(c, "n-numbers", "+1 650 555 0100").await;
    click_through(c, Locator::Id("n-save")).await;
    assert!(text_of(c, "main").await.contains("+16505550100"));
    let (code, req) = e
        .post(
            &fx.key,
            "/engagement/v3/call-in/requests/create",
            json!({"groupName": "Support"}),
        )
        .await;
    assert_eq!(code, 200, "{req}");
    c.refresh().await.unwrap();
    assert!(text_of(c, "#call-in-records").await.contains("live"));
    shot(c, "18-call-in").await;
    click_through(c, Locator::LinkText("Developer")).await;
    type_into(c, "captcha-secret", SECRET).await;
    type_into(c, "captcha-site", "site-1").await;
    click_through(c, Locator::Id("save-captcha")).await;
    assert_eq!(text_of(c, "#notice").await, "CAPTCHA credentials saved.");
    assert!(
        text_of(c, "#cred-captcha-status")
            .await
            .starts_with("Set at")
    );
    assert!(!c.source().await.unwrap().contains(SECRET));
    c.find(Locator::Id("cred-h")).await.unwrap();
    shot(c, "19-developer-credentials").await;
    b.close().await;
}

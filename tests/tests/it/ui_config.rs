//! The `/ges` Click-To-Call-In page and the Developer page's credentials forms
//! (docs/admin-ui.md#pages): roles, CSRF, tenant scoping, write-only secrets, bad input → 4xx
//! and nothing stored; then an Administrator in Chromium (screenshots 18–19).

use fantoccini::Locator;
use harness::{
    Engage, TestEnv,
    ui::{Browser, csrf_of, ui_login},
};
use serde_json::{Value, json};

use crate::ui::{PASSWORD, browser_login, click_through, get, post, shot, text_of, ui_fixture};

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
        let mut pairs = vec![("csrf", csrf.as_str())];
        pairs.extend(fields.iter().copied());
        let (code, body) = post(e, &dev, &path, &pairs).await;
        assert_eq!(code, 303, "{kind}: {body}");
        assert_eq!(cred(e, "acme", kind).await["configured"], true);
        assert_eq!(cred(e, "globex", kind).await["configured"], false);
    }
    let (_, page) = get(e, &dev, "/ges/developer").await;
    assert!(page.contains("site-1") && page.contains("acme-push") && page.contains("cid-1"));
    assert!(
        !page.contains(SECRET) && !page.contains("PRIVATE KEY"),
        "a secret shown"
    );
    assert_eq!(page.matches("Set at").count(), 3);
    let long = "k".repeat(5000);
    // Bad input: 4xx naming the problem, never the secret; the stored record unchanged.
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
        let mut pairs = vec![("csrf", csrf.as_str())];
        pairs.extend(fields.iter().copied());
        let (code, body) = post(
            e,
            &dev,
            &format!("/ges/developer/credentials/{kind}"),
            &pairs,
        )
        .await;
        assert!((400..500).contains(&code), "{kind}: {code} {body}");
        assert!(!body.contains(SECRET), "{kind}: the secret echoed");
    }
    assert_eq!(cred(e, "acme", "captcha").await["siteKey"], "site-1");
    // Roles and the token.
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let sue_csrf = csrf_of(&get(e, &sue, "/ges/queues").await.1).unwrap();
    let pairs = [("csrf", sue_csrf.as_str()), ("secret", "x")];
    assert_eq!(
        post(e, &sue, "/ges/developer/credentials/captcha", &pairs)
            .await
            .0,
        403
    );
    let pairs = [("csrf", sue_csrf.as_str())];
    assert_eq!(
        post(e, &sue, "/ges/developer/credentials/captcha/delete", &pairs)
            .await
            .0,
        403
    );
    assert_eq!(
        post(e, &dev, "/ges/developer/credentials/captcha/delete", &[])
            .await
            .0,
        403
    );
    assert_eq!(cred(e, "acme", "captcha").await["configured"], true);
    let pairs = [("csrf", csrf.as_str())];
    assert_eq!(
        post(e, &dev, "/ges/developer/credentials/captcha/delete", &pairs)
            .await
            .0,
        303
    );
    assert_eq!(cred(e, "acme", "captcha").await["configured"], false);
}

/// Groups are edited through the admin API's validation (numbers normalised, one group per
/// number across tenants), Supervisors read, Monitors are refused, and the requests show up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_in_page_edits_groups_and_lists_requests() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    e.tenant("globex").await;
    let theirs = json!({"numbers": ["+16505550199"]});
    assert_eq!(
        e.admin_put("/ges/v1/tenants/globex/call-in-groups/Theirs", theirs)
            .await
            .0,
        201
    );
    let ada = ui_login(e, "acme", "ada", PASSWORD).await.unwrap();
    let (code, page) = get(e, &ada, "/ges/config/call-in").await;
    assert_eq!(code, 200);
    assert!(
        !page.contains("Theirs") && !page.contains("+16505550199"),
        "{page}"
    );
    let csrf = csrf_of(&page).unwrap();
    let group = |numbers: &'static str, len: &'static str| {
        vec![
            ("name", "Support"),
            ("numbers", numbers),
            ("access_codes", "on"),
            ("code_length", len),
            ("lifetime_seconds", "300"),
        ]
    };
    let save = "/ges/config/call-in/save";
    for (fields, expect) in [
        (group("", "4"), 400),
        (group("+1 650 555 0100", "x"), 400),
        (group("+1 650 555 0100", "12"), 400),
        (group("not a number", "4"), 400),
        (group("+1 650 555 0199", "4"), 409),
        (
            vec![
                ("name", "bad/name"),
                ("numbers", "+16505550100"),
                ("code_length", "4"),
                ("lifetime_seconds", "1"),
            ],
            400,
        ),
        (vec![("name", "Support")], 400),
    ] {
        let mut pairs = vec![("csrf", csrf.as_str())];
        pairs.extend(fields.iter().copied());
        let (code, body) = post(e, &ada, save, &pairs).await;
        assert_eq!(code, expect, "{fields:?}: {body}");
    }
    assert_eq!(
        e.admin_get("/ges/v1/tenants/acme/call-in-groups/Support")
            .await
            .0,
        404
    );
    let mut pairs = vec![("csrf", csrf.as_str())];
    pairs.extend(group("+1 650 555 0100\n(650) 555-0101", "4"));
    assert_eq!(post(e, &ada, save, &pairs).await.0, 303);
    let (_, g) = e
        .admin_get("/ges/v1/tenants/acme/call-in-groups/Support")
        .await;
    assert_eq!(
        g["data"]["numbers"],
        json!(["+16505550100", "+16505550101"]),
        "{g}"
    );
    let (code, req) = e
        .post(
            &fx.key,
            "/engagement/v3/call-in/requests/create",
            json!({"groupName": "Support"}),
        )
        .await;
    assert_eq!(code, 200, "{req}");
    let (_, page) = get(e, &ada, "/ges/config/call-in").await;
    let records = &page[page.find("call-in-records").unwrap()..];
    assert!(
        records.contains("live") && records.contains("+1650555010"),
        "{records}"
    );
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let (code, page) = get(e, &sue, "/ges/config/call-in").await;
    assert!(
        code == 200 && page.contains("Read-only") && !page.contains("/ges/config/call-in/save")
    );
    let sue_csrf = csrf_of(&page).unwrap();
    let mut pairs = vec![("csrf", sue_csrf.as_str())];
    pairs.extend(group("+16505550102", "4"));
    assert_eq!(post(e, &sue, save, &pairs).await.0, 403);
    let del = [("csrf", sue_csrf.as_str())];
    assert_eq!(
        post(e, &sue, "/ges/config/call-in/Support/delete", &del)
            .await
            .0,
        403
    );
    let mo = ui_login(e, "acme", "mo", PASSWORD).await.unwrap();
    assert_eq!(get(e, &mo, "/ges/config/call-in").await.0, 403);
    assert_eq!(
        post(e, &ada, "/ges/config/call-in/Support/delete", &[])
            .await
            .0,
        403,
        "no token"
    );
    let del = [("csrf", csrf.as_str())];
    assert_eq!(
        post(e, &ada, "/ges/config/call-in/Theirs/delete", &del)
            .await
            .0,
        404
    );
    assert_eq!(
        e.admin_get("/ges/v1/tenants/globex/call-in-groups/Theirs")
            .await
            .0,
        200
    );
    assert_eq!(
        post(e, &ada, "/ges/config/call-in/Support/delete", &del)
            .await
            .0,
        303
    );
    assert_eq!(
        e.admin_get("/ges/v1/tenants/acme/call-in-groups/Support")
            .await
            .0,
        404
    );
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
    c.find(Locator::Id("n-name"))
        .await
        .unwrap()
        .send_keys("Support")
        .await
        .unwrap();
    c.find(Locator::Id("n-numbers"))
        .await
        .unwrap()
        .send_keys("+1 650 555 0100")
        .await
        .unwrap();
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
    c.find(Locator::Id("captcha-secret"))
        .await
        .unwrap()
        .send_keys(SECRET)
        .await
        .unwrap();
    c.find(Locator::Id("captcha-site"))
        .await
        .unwrap()
        .send_keys("site-1")
        .await
        .unwrap();
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

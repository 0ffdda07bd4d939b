//! The `/ges/` admin UI (docs/admin-ui.md): users and roles, sessions, CSRF, bounded logins,
//! over plain HTTP; then headless Chromium through chromedriver (WebDriver) clicking through
//! the pages, with screenshots written to `target/ui-screenshots/` (not committed).

use std::{path::PathBuf, time::Duration};

use fantoccini::{Client, Locator};
use harness::{
    Engage, Fixture, TestEnv, open_service,
    ui::{Browser, csrf_of, form_body, no_redirects, ui_login},
};
use serde_json::{Value, json};

pub(crate) const PASSWORD: &str = "correct horse battery";

/// A fixture with users of every role in tenant `acme` and a capacity rule on `sales`.
pub(crate) async fn ui_fixture(env: TestEnv) -> Fixture {
    let fx = Fixture::with(env, &[], "acme", "sales", open_service(json!({}))).await;
    let e = &fx.engage;
    for (user, role) in [
        ("ada", "Administrator"),
        ("sue", "Supervisor"),
        ("mo", "Monitor"),
        ("dev", "Developer"),
    ] {
        let body = json!({"username": user, "password": PASSWORD, "role": role});
        let (code, answer) = e.admin_post("/ges/v1/tenants/acme/users", body).await;
        assert_eq!(code, 200, "{user}: {answer}");
    }
    let hours: serde_json::Map<String, Value> =
        (0..24).map(|h| (format!("{h:02}00"), json!(4))).collect();
    let weekly: serde_json::Map<String, Value> =
        (1..=7).map(|d| (d.to_string(), json!(hours))).collect();
    let rule = json!({"slot_minutes": 60, "weekly": weekly});
    let (code, answer) = e
        .admin_put("/ges/v1/tenants/acme/capacity-rules/allday", rule)
        .await;
    assert_eq!(code, 201, "{answer}");
    e.service(
        "acme",
        "sales",
        open_service(json!({"capacity_rule": "allday"})),
    )
    .await;
    fx
}

/// GET `path` with a session cookie: (status, body text).
pub(crate) async fn get(e: &Engage, cookie: &str, path: &str) -> (u16, String) {
    let r = no_redirects()
        .get(format!("{}{path}", e.internal))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// POSTs a form with a session cookie: (status, body text).
pub(crate) async fn post(
    e: &Engage,
    cookie: &str,
    path: &str,
    pairs: &[(&str, &str)],
) -> (u16, String) {
    let r = no_redirects()
        .post(format!("{}{path}", e.internal))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(pairs))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_validated_hashed_and_bound_to_their_tenant() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    e.tenant("other").await;
    for (body, why) in [
        (
            json!({"username": "x", "password": "short", "role": "Monitor"}),
            "short password",
        ),
        (
            json!({"username": "x", "password": PASSWORD, "role": "root"}),
            "unknown role",
        ),
        (
            json!({"username": "@admin", "password": PASSWORD, "role": "Monitor"}),
            "reserved",
        ),
        (
            json!({"username": "a b", "password": PASSWORD, "role": "Monitor"}),
            "space",
        ),
        (json!({"username": "x", "password": PASSWORD}), "no role"),
    ] {
        let (code, answer) = e.admin_post("/ges/v1/tenants/acme/users", body).await;
        assert_eq!(code, 400, "{why}: {answer}");
    }
    let (code, _) = e
        .admin_post(
            "/ges/v1/tenants/nosuch/users",
            json!({"username": "x", "password": PASSWORD, "role": "Monitor"}),
        )
        .await;
    assert_eq!(code, 404);
    let (code, list) = e.admin_get("/ges/v1/tenants/acme/users").await;
    assert_eq!(code, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 4, "{list}");
    assert!(
        !list.to_string().contains("argon2"),
        "no hash shown: {list}"
    );
    let hash = fx
        .env
        .count("SELECT count(*) FROM ui_users WHERE password_hash LIKE '$argon2id$%'")
        .await;
    assert_eq!(hash, 4, "every password stored as an Argon2id hash");
    // A user of acme cannot log in to another tenant; the admin token can, to any.
    assert_eq!(ui_login(e, "other", "ada", PASSWORD).await, Err(401));
    let admin = ui_login(e, "other", "@admin", harness::ADMIN_TOKEN)
        .await
        .unwrap();
    let (code, page) = get(e, &admin, "/ges/queues").await;
    assert_eq!(code, 200);
    assert!(page.contains("tenant other"), "{page}");
    // Deleting a user ends its sessions.
    let ada = ui_login(e, "acme", "ada", PASSWORD).await.unwrap();
    assert_eq!(get(e, &ada, "/ges/queues").await.0, 200);
    assert_eq!(
        e.admin_delete("/ges/v1/tenants/acme/users/ada").await.0,
        200
    );
    assert_eq!(get(e, &ada, "/ges/queues").await.0, 401);
    assert_eq!(ui_login(e, "acme", "ada", PASSWORD).await, Err(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_locks_the_user_and_never_logs_secrets() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    for i in 0..5 {
        let wrong = format!("wrong password {i}");
        assert_eq!(ui_login(e, "acme", "sue", &wrong).await, Err(401));
    }
    // Locked: even the right password is refused now.
    assert_eq!(ui_login(e, "acme", "sue", PASSWORD).await, Err(401));
    let locked = fx
        .env
        .count("SELECT count(*) FROM ui_users WHERE username = 'sue' AND locked_until > now()")
        .await;
    assert_eq!(locked, 1);
    // Another user is not affected.
    let cookie = ui_login(e, "acme", "mo", PASSWORD).await.unwrap();
    let value = cookie.trim_start_matches("ges_session=");
    // Admin-token guesses are bounded per process too.
    for _ in 0..10 {
        assert_eq!(
            ui_login(e, "acme", "@admin", "not-the-token-at-all").await,
            Err(401)
        );
    }
    assert_eq!(
        ui_login(e, "acme", "@admin", harness::ADMIN_TOKEN).await,
        Err(401)
    );
    let log = e.proc.output();
    for secret in [PASSWORD, "wrong password", value, harness::ADMIN_TOKEN] {
        assert!(!log.contains(secret), "the log shows {secret:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_checks_the_role_and_the_csrf_token_on_the_server() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    let mo = ui_login(e, "acme", "mo", PASSWORD).await.unwrap();
    let (code, page) = get(e, &mo, "/ges/queues").await;
    assert_eq!(code, 200);
    assert!(
        !page.contains("/ges/developer") && !page.contains("/ges/config/"),
        "{page}"
    );
    let csrf = csrf_of(&page).unwrap();
    for path in [
        "/ges/developer",
        "/ges/config/capacity",
        "/ges/config/services",
    ] {
        assert_eq!(get(e, &mo, path).await.0, 403, "monitor GET {path}");
    }
    let grid = [("csrf", csrf.as_str()), ("c_1_0900", "99")];
    let (code, _) = post(e, &mo, "/ges/config/capacity/allday", &grid).await;
    assert_eq!(
        code, 403,
        "a monitor posting the capacity form with its token"
    );
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let (code, page) = get(e, &sue, "/ges/config/capacity").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("Read-only") && !page.contains("Save allday"),
        "{page}"
    );
    let sue_csrf = csrf_of(&page).unwrap();
    let grid = [("csrf", sue_csrf.as_str()), ("c_1_0900", "99")];
    assert_eq!(
        post(e, &sue, "/ges/config/capacity/allday", &grid).await.0,
        403
    );
    assert_eq!(
        get(e, &sue, "/ges/developer").await.0,
        403,
        "no Developer tab"
    );
    let ada = ui_login(e, "acme", "ada", PASSWORD).await.unwrap();
    let ada_csrf = csrf_of(&get(e, &ada, "/ges/queues").await.1).unwrap();
    // Without the token, with another session's token: refused, nothing changed.
    for pairs in [
        vec![("c_1_0900", "99")],
        vec![("csrf", sue_csrf.as_str()), ("c_1_0900", "99")],
    ] {
        let (code, body) = post(e, &ada, "/ges/config/capacity/allday", &pairs).await;
        assert_eq!(code, 403, "{body}");
    }
    let (_, rule) = e
        .admin_get("/ges/v1/tenants/acme/capacity-rules/allday")
        .await;
    assert_eq!(rule["data"]["weekly"]["1"]["0900"], 4, "{rule}");
    let grid = [
        ("csrf", ada_csrf.as_str()),
        ("c_1_0900", "99"),
        ("c_2_0900", "7"),
    ];
    assert_eq!(
        post(e, &ada, "/ges/config/capacity/allday", &grid).await.0,
        303
    );
    let (_, rule) = e
        .admin_get("/ges/v1/tenants/acme/capacity-rules/allday")
        .await;
    assert_eq!(rule["data"]["weekly"]["1"]["0900"], 99, "{rule}");
    // Logout needs the token too.
    assert_eq!(post(e, &ada, "/ges/logout", &[]).await.0, 403);
    assert_eq!(
        post(e, &ada, "/ges/logout", &[("csrf", &ada_csrf)]).await.0,
        303
    );
    assert_eq!(get(e, &ada, "/ges/queues").await.0, 401);
}

/// `target/ui-screenshots/`, created.
pub(crate) fn shots_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Logs in through the form as a person would.
pub(crate) async fn browser_login(c: &Client, e: &Engage, user: &str, password: &str) {
    c.goto(&format!("{}/ges/login", e.internal)).await.unwrap();
    type_into(c, "tenant", "acme").await;
    type_into(c, "username", user).await;
    type_into(c, "password", password).await;
    click_through(c, Locator::Id("login")).await;
}

/// Types `text` into the input with id `id`, as a person would.
pub(crate) async fn type_into(c: &Client, id: &str, text: &str) {
    let input = c.find(Locator::Id(id)).await.unwrap();
    input.send_keys(text).await.unwrap();
}

/// Clicks what submits a form or follows a link and waits until the next page has replaced
/// this one (the old page's root goes stale): on a loaded machine a find right after the
/// click could otherwise read the old page, or an API read run before the POST.
pub(crate) async fn click_through(c: &Client, target: Locator<'_>) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    c.find(target).await.unwrap().click().await.unwrap();
    for _ in 0..200 {
        if old.tag_name().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.wait().for_element(Locator::Css("body")).await.unwrap();
}

pub(crate) async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Builds and submits a form from the page (CSP allows forms to 'self'; WebDriver scripts
/// are not page scripts): `with_csrf` copies the page's token into it.
pub(crate) async fn submit_forged(c: &Client, action: &str, with_csrf: bool, fields: Value) {
    let script = r#"
        const [action, withCsrf, fields] = arguments;
        const f = document.createElement('form');
        f.method = 'post'; f.action = action;
        const add = (n, v) => { const i = document.createElement('input');
            i.type = 'hidden'; i.name = n; i.value = v; f.appendChild(i); };
        if (withCsrf) add('csrf', document.querySelector('input[name=csrf]').value);
        for (const [n, v] of Object.entries(fields)) add(n, v);
        document.body.appendChild(f); f.submit();"#;
    c.execute(script, vec![json!(action), json!(with_csrf), fields])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// An Administrator in Chromium: every page, the capacity grid saved, a number tested, a key
/// validated, an API error found by corrId, a forged form refused, logout; screenshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_works_through_every_page_in_a_browser() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    fx.create().in_secs(3600).id().await;
    let rule = json!({"permitted_countries": ["US"]});
    assert_eq!(
        e.admin_put("/ges/v1/tenants/acme/number-rules/us-only", rule)
            .await
            .0,
        201
    );
    let b = Browser::start().await;
    let c = &b.client;
    browser_login(c, e, "ada", PASSWORD).await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ges/queues")
    );
    assert!(
        text_of(c, "#whoami")
            .await
            .contains("ada · Administrator · tenant acme")
    );
    let bars = c
        .find_all(Locator::Css("svg.chart rect.booked"))
        .await
        .unwrap();
    // One bar per hourly slot overlapping the next 24 hours (the current one included).
    assert!((24..=25).contains(&bars.len()), "{} bars", bars.len());
    shot(c, "01-queues").await;
    c.set_window_size(390, 844).await.unwrap();
    shot(c, "02-queues-phone").await;
    c.set_window_size(1280, 900).await.unwrap();
    click_through(c, Locator::LinkText("Services")).await;
    assert!(c.source().await.unwrap().contains("allday"));
    shot(c, "03-services").await;
    capacity_in_browser(c, e).await;
    numbers_in_browser(c).await;
    developer_in_browser(c, &fx).await;
    submit_forged(c, "/ges/developer/refetch", false, json!({})).await;
    assert!(
        text_of(c, "#error-message")
            .await
            .contains("did not come from this site")
    );
    shot(c, "07-csrf-refused").await;
    c.goto(&format!("{}/ges/queues", e.internal)).await.unwrap();
    click_through(c, Locator::Id("logout")).await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ges/login")
    );
    c.goto(&format!("{}/ges/queues", e.internal)).await.unwrap();
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/ges/login",
        "logged out"
    );
    b.close().await;
}

async fn capacity_in_browser(c: &Client, e: &Engage) {
    click_through(c, Locator::LinkText("Capacity")).await;
    let cell = c.find(Locator::Css("input[name=c_1_0900]")).await.unwrap();
    assert_eq!(
        cell.attr("aria-label").await.unwrap().as_deref(),
        Some("Monday 09:00")
    );
    cell.clear().await.unwrap();
    cell.send_keys("12").await.unwrap();
    shot(c, "04-capacity").await;
    click_through(c, Locator::XPath("//button[text()='Save allday']")).await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ges/config/capacity")
    );
    let (_, rule) = e
        .admin_get("/ges/v1/tenants/acme/capacity-rules/allday")
        .await;
    assert_eq!(rule["data"]["weekly"]["1"]["0900"], 12, "{rule}");
    assert_eq!(rule["data"]["weekly"]["2"]["0900"], 4, "{rule}");
}

async fn numbers_in_browser(c: &Client) {
    click_through(c, Locator::LinkText("Number rules")).await;
    for (number, expect) in [
        ("+33 1 42 68 53 00", "Refused: number not permitted"),
        ("+1 202 555 0100", "Accepted: +12025550100"),
    ] {
        type_into(c, "number", number).await;
        c.find(Locator::Css("#rule option[value='us-only']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        click_through(c, Locator::Id("test-number")).await;
        let result = text_of(c, "#test-result").await;
        assert!(result.contains(expect), "{number}: {result}");
    }
    shot(c, "05-number-rules").await;
}

async fn developer_in_browser(c: &Client, fx: &Fixture) {
    let (code, failed) = fx.create().phone("not a number").send().await;
    assert_eq!(code, 400);
    let corr = failed["status"]["corrId"].as_str().unwrap().to_string();
    click_through(c, Locator::LinkText("Developer")).await;
    for (key, expect) in [
        (fx.key.as_str(), "Valid Api Key (tenant acme)"),
        ("egk_nope", "Invalid Api Key"),
    ] {
        type_into(c, "key", key).await;
        click_through(c, Locator::Id("validate-key")).await;
        assert_eq!(text_of(c, "#notice").await, expect);
    }
    // The error log is written in the background: search until it is there.
    let mut found = String::new();
    for _ in 0..50 {
        c.find(Locator::Id("corr"))
            .await
            .unwrap()
            .clear()
            .await
            .unwrap();
        type_into(c, "corr", &corr).await;
        click_through(c, Locator::Id("search-errors")).await;
        found = text_of(c, "main table tbody").await;
        if found.contains(&corr) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(found.contains(&corr) && found.contains("400"), "{found}");
    shot(c, "06-developer").await;
}

/// A Monitor sees only Queues, is refused (403) when it posts a form anyway, and its session
/// ends after the (short, configured) idle time: the next page is the login form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_is_refused_controls_and_an_idle_session_ends() {
    let fx = ui_fixture(TestEnv::new().with("UI_SESSION_IDLE_S", "5")).await;
    let e = &fx.engage;
    let b = Browser::start().await;
    let c = &b.client;
    browser_login(c, e, "mo", PASSWORD).await;
    let nav = text_of(c, "nav").await;
    assert_eq!(
        nav.split_whitespace().collect::<Vec<_>>(),
        ["Callbacks", "Queues"],
        "a monitor's navigation: {nav}"
    );
    assert!(
        c.find(Locator::Css("button[type=submit]:not(#logout)"))
            .await
            .is_err()
    );
    shot(c, "08-monitor-queues").await;
    c.goto(&format!("{}/ges/config/capacity", e.internal))
        .await
        .unwrap();
    assert!(
        text_of(c, "#error-message")
            .await
            .contains("does not allow")
    );
    c.goto(&format!("{}/ges/queues", e.internal)).await.unwrap();
    submit_forged(
        c,
        "/ges/config/capacity/allday",
        true,
        json!({"c_1_0900": "99"}),
    )
    .await;
    assert!(text_of(c, "h1").await.contains("403"));
    assert!(
        text_of(c, "#error-message")
            .await
            .contains("does not allow")
    );
    shot(c, "09-monitor-refused").await;
    let (_, rule) = e
        .admin_get("/ges/v1/tenants/acme/capacity-rules/allday")
        .await;
    assert_eq!(rule["data"]["weekly"]["1"]["0900"], 4, "unchanged: {rule}");
    c.goto(&format!("{}/ges/queues", e.internal)).await.unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ges/queues")
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    c.refresh().await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!((url.path(), url.query()), ("/ges/login", Some("expired=1")));
    assert!(text_of(c, ".notice").await.contains("session ended"));
    shot(c, "10-session-expired").await;
    b.close().await;
}

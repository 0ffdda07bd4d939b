//! The `/ges/callbacks` pages (docs/admin-ui.md#callbacks): every form over plain HTTP (role,
//! CSRF, tenant scoping, bad input → 4xx, never 5xx), then a Supervisor and a Monitor in
//! headless Chromium: create, find by phone, reschedule, cancel, export, bulk cancel with its
//! dry-run count; screenshots to `target/ui-screenshots/`.

use fantoccini::{Client, Locator};
use harness::{
    Engage, Fixture, TestEnv, in_secs, open_service,
    ui::{Browser, csrf_of, no_redirects, ui_login},
};
use serde_json::{Value, json};

use crate::ui::{
    PASSWORD, browser_login, click_through, get, post, shot, submit_forged, text_of, type_into,
    ui_fixture,
};

/// The admin API's view of a callback of `tenant`.
async fn admin_view(e: &Engage, tenant: &str, id: &str) -> Value {
    let (code, body) = e
        .admin_get(&format!("/ges/v1/tenants/{tenant}/callbacks/{id}"))
        .await;
    assert_eq!(code, 200, "{body}");
    body["data"]["callback"].clone()
}

/// GET with the session cookie: (status, content type, body).
async fn get_typed(e: &Engage, cookie: &str, path: &str) -> (u16, String, String) {
    let r = no_redirects()
        .get(format!("{}{path}", e.internal))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), ct, r.text().await.unwrap())
}

/// A Monitor sees the grid without controls and is refused every form; a Developer has no
/// Callbacks page; forms without the session's token are refused; a Supervisor of `acme`
/// cannot read or change `globex`'s callback by id; nothing of it changed anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_forms_check_role_csrf_and_tenant_on_the_server() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    let ours = fx.create().in_secs(3600).id().await;
    let globex = e
        .provision("globex", "sales", open_service(json!({})))
        .await;
    let theirs = e
        .create(&globex)
        .service("sales")
        .phone("+12025550111")
        .in_secs(3600)
        .id()
        .await;
    let mo_csrf = a_monitor_is_refused_every_form(e, &ours, &theirs).await;
    let cancel = format!("/ges/callbacks/{ours}/cancel");
    let dev = ui_login(e, "acme", "dev", PASSWORD).await.unwrap();
    assert_eq!(get(e, &dev, "/ges/callbacks").await.0, 403);
    assert_eq!(get(e, &dev, &format!("/ges/callbacks/{ours}")).await.0, 403);
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let sue_csrf = csrf_of(&get(e, &sue, "/ges/callbacks").await.1).unwrap();
    // Without a token, with another session's: refused before anything runs.
    for token in [None, Some(mo_csrf.as_str())] {
        let pairs: Vec<(&str, &str)> = token.map(|t| ("csrf", t)).into_iter().collect();
        assert_eq!(post(e, &sue, &cancel, &pairs).await.0, 403);
        let mut create = pairs.clone();
        create.extend([("service", "sales"), ("phone", "+12025550124")]);
        assert_eq!(post(e, &sue, "/ges/callbacks/create", &create).await.0, 403);
    }
    another_tenants_callback_is_not_found(e, &sue, &sue_csrf, &theirs).await;
    assert_eq!(admin_view(e, "globex", &theirs).await["state"], "SCHEDULED");
    assert_eq!(admin_view(e, "acme", &ours).await["state"], "SCHEDULED");
    let (_, _, csv) = get_typed(e, &sue, "/ges/callbacks.csv").await;
    assert!(csv.contains(&ours) && !csv.contains(&theirs), "{csv}");
}

/// A Monitor's grid has no controls, and each form posted anyway (with its token) is a 403;
/// answers the Monitor's token.
async fn a_monitor_is_refused_every_form(e: &Engage, ours: &str, theirs: &str) -> String {
    let mo = ui_login(e, "acme", "mo", PASSWORD).await.unwrap();
    let (code, grid) = get(e, &mo, "/ges/callbacks").await;
    assert_eq!(code, 200);
    assert!(grid.contains(ours) && !grid.contains(theirs), "{grid}");
    for control in [
        "/ges/callbacks/create",
        "bulk-cancel",
        "callbacks.csv",
        "sel_",
    ] {
        assert!(!grid.contains(control), "a monitor sees {control}");
    }
    let (code, detail) = get(e, &mo, &format!("/ges/callbacks/{ours}")).await;
    assert_eq!(code, 200);
    assert!(!detail.contains("/cancel") && !detail.contains("/reschedule"));
    let mo_csrf = csrf_of(&grid).unwrap();
    let cancel = format!("/ges/callbacks/{ours}/cancel");
    let resched = format!("/ges/callbacks/{ours}/reschedule");
    let sel = format!("sel_{ours}");
    let at = in_secs(7200);
    let refused: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "/ges/callbacks/create",
            vec![("service", "sales"), ("phone", "+12025550123")],
        ),
        (&cancel, vec![]),
        (&resched, vec![("desired", at.as_str())]),
        (
            "/ges/callbacks/bulk-cancel",
            vec![(&sel, "on"), ("confirm", "yes")],
        ),
    ];
    for (path, fields) in &refused {
        let mut pairs = vec![("csrf", mo_csrf.as_str())];
        pairs.extend(fields.iter().copied());
        assert_eq!(post(e, &mo, path, &pairs).await.0, 403, "monitor {path}");
    }
    assert_eq!(get(e, &mo, "/ges/callbacks.csv").await.0, 403);
    mo_csrf
}

/// Another tenant's callback, by id: as if it did not exist, on every page and form.
async fn another_tenants_callback_is_not_found(
    e: &Engage,
    sue: &str,
    sue_csrf: &str,
    theirs: &str,
) {
    let at = in_secs(7200);
    let csrf = [("csrf", sue_csrf)];
    assert_eq!(
        get(e, sue, &format!("/ges/callbacks/{theirs}")).await.0,
        404
    );
    let theirs_cancel = format!("/ges/callbacks/{theirs}/cancel");
    assert_eq!(post(e, sue, &theirs_cancel, &csrf).await.0, 404);
    let pairs = [("csrf", sue_csrf), ("desired", at.as_str())];
    let theirs_resched = format!("/ges/callbacks/{theirs}/reschedule");
    assert_eq!(post(e, sue, &theirs_resched, &pairs).await.0, 404);
    let theirs_sel = format!("sel_{theirs}");
    let pairs = [
        ("csrf", sue_csrf),
        (theirs_sel.as_str(), "on"),
        ("confirm", "yes"),
    ];
    let (code, page) = post(e, sue, "/ges/callbacks/bulk-cancel", &pairs).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("NOT_FOUND") && page.contains("Cancelled 0"),
        "{page}"
    );
}

/// Bad input on every callback form and page is a 4xx page naming the problem; nothing is
/// stored or changed; never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_callback_input_is_a_4xx_and_changes_nothing() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    let ours = fx.create().in_secs(3600).id().await;
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let csrf = csrf_of(&get(e, &sue, "/ges/callbacks").await.1).unwrap();
    bad_pages_are_4xx(e, &sue).await;
    let cancel_unknown = "/ges/callbacks/00000000-0000-0000-0000-000000000000/cancel";
    let resched = format!("/ges/callbacks/{ours}/reschedule");
    bad_creates_are_4xx(e, &sue, &csrf).await;
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (&resched, vec![("desired", "")]),
        (&resched, vec![("desired", "2026-13-45T99:00")]),
        (&resched, vec![]),
        (
            "/ges/callbacks/x/reschedule",
            vec![("desired", "2030-01-01T10:00")],
        ),
        (cancel_unknown, vec![]),
        ("/ges/callbacks/bulk-cancel", vec![]),
        (
            "/ges/callbacks/bulk-cancel",
            vec![("tz", "UTC"), ("confirm", "yes")],
        ),
        ("/ges/callbacks/bulk-cancel", vec![("state", "BOGUS")]),
        (
            "/ges/callbacks/bulk-cancel",
            vec![("sel_junk", "on"), ("confirm", "yes")],
        ),
    ];
    for (path, fields) in &cases {
        let mut pairs = vec![("csrf", csrf.as_str())];
        pairs.extend(fields.iter().copied());
        let (code, body) = post(e, &sue, path, &pairs).await;
        let ok = (400..500).contains(&code) || (code == 200 && body.contains("INVALID_ID"));
        assert!(ok, "{path} {fields:?}: {code} {body}");
    }
    let (_, listed) = e.admin_get("/ges/v1/tenants/acme/callbacks").await;
    assert_eq!(
        listed["data"]["callbacks"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    let cb = admin_view(e, "acme", &ours).await;
    assert_eq!(cb["state"], "SCHEDULED");
}

/// Create forms with a bad number, service, time or zone: 4xx, nothing stored.
async fn bad_creates_are_4xx(e: &Engage, sue: &str, csrf: &str) {
    let long = "9".repeat(300);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("service", "sales"), ("phone", "not a number")],
        vec![("service", "nope"), ("phone", "+12025550100")],
        vec![("service", "sales"), ("phone", &long)],
        vec![("service", "sales")],
        vec![
            ("service", "sales"),
            ("phone", "+12025550100"),
            ("desired", "tomorrow"),
        ],
        vec![
            ("service", "sales"),
            ("phone", "+12025550100"),
            ("tz", "Nowhere/Else"),
        ],
    ];
    for fields in &cases {
        let mut pairs = vec![("csrf", csrf)];
        pairs.extend(fields.iter().copied());
        let (code, body) = post(e, sue, "/ges/callbacks/create", &pairs).await;
        assert!((400..500).contains(&code), "{fields:?}: {code} {body}");
    }
}

/// Bad query strings and ids of the grid, the export and the detail: 4xx pages.
async fn bad_pages_are_4xx(e: &Engage, sue: &str) {
    for path in [
        "/ges/callbacks?state=NOPE",
        "/ges/callbacks?tz=Mars/Olympus",
        "/ges/callbacks?cursor=zzz",
        "/ges/callbacks?desiredFrom=yesterday",
        "/ges/callbacks?desiredFrom=2026-07-02T00:00&desiredTo=2026-07-01T00:00",
        "/ges/callbacks?sort=phone",
        "/ges/callbacks.csv?order=sideways",
        "/ges/callbacks/not-an-id",
        "/ges/callbacks/00000000-0000-0000-0000-000000000000",
        "/ges/callbacks/00000000-0000-0000-0000-000000000000?tz=Nowhere",
    ] {
        let (code, body) = get(e, sue, path).await;
        assert!((400..500).contains(&code), "{path}: {code} {body}");
    }
}

/// A create through the form is the public create's (its number normalised, found by any
/// spelling), reschedule and cancel land on the detail with its history, the export has the
/// filtered rows, and a bulk cancel by filter counts first and cancels only on confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_creates_finds_changes_and_exports_over_http() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let csrf = csrf_of(&get(e, &sue, "/ges/callbacks").await.1).unwrap();
    let at = in_secs(3 * 3600);
    let local = &at[..16];
    let (id, to) = create_by_form(e, &sue, &csrf, local).await;
    let cb = admin_view(e, "acme", &id).await;
    assert_eq!(
        (cb["phoneE164"].as_str(), cb["state"].as_str()),
        (Some("+12025550199"), Some("SCHEDULED"))
    );
    assert!(
        cb["desiredTime"].as_str().unwrap().starts_with(local),
        "{cb}"
    );
    let (code, page) = get(e, &sue, &to).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("Callback created.") && page.contains("create"),
        "{page}"
    );
    fx.create().in_secs(3600).id().await;
    let (_, grid) = get(e, &sue, "/ges/callbacks?phone=202.555.0199&state=&service=").await;
    assert_eq!(grid.matches("class=\"open\"").count(), 1, "{grid}");
    assert!(grid.contains(&id));
    // Bulk cancel by the same filter: a count first, nothing cancelled until confirmed.
    let bulk = [
        ("csrf", csrf.as_str()),
        ("phone", "2025550199"),
        ("tz", "UTC"),
    ];
    let (code, page) = post(e, &sue, "/ges/callbacks/bulk-cancel", &bulk).await;
    assert_eq!(code, 200);
    assert!(page.contains("1 callback would be cancelled"), "{page}");
    assert_eq!(admin_view(e, "acme", &id).await["state"], "SCHEDULED");
    let (code, csv) = get(e, &sue, "/ges/callbacks.csv?phone=%2B12025550199&tz=UTC").await;
    assert_eq!(code, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[0].starts_with("id,serviceName,state") && lines[1].starts_with(&id),
        "{csv}"
    );
    let mut confirm = bulk.to_vec();
    confirm.push(("confirm", "yes"));
    let (code, page) = post(e, &sue, "/ges/callbacks/bulk-cancel", &confirm).await;
    assert_eq!(code, 200);
    assert!(page.contains("Cancelled 1"), "{page}");
    let cb = admin_view(e, "acme", &id).await;
    assert_eq!(
        (cb["state"].as_str(), cb["reason"].as_str()),
        (Some("COMPLETED"), Some("CANCELLED"))
    );
    let (_, listed) = e
        .admin_get("/ges/v1/tenants/acme/callbacks?state=SCHEDULED")
        .await;
    assert_eq!(
        listed["data"]["callbacks"].as_array().unwrap().len(),
        1,
        "the other stays"
    );
}

/// Posts the create form (phone `+1 (202) 555-0199`, desired `local` UTC): (id, the
/// detail it redirects to).
async fn create_by_form(e: &Engage, sue: &str, csrf: &str, local: &str) -> (String, String) {
    let create = [
        ("csrf", csrf),
        ("service", "sales"),
        ("phone", "+1 (202) 555-0199"),
        ("desired", local),
        ("tz", "UTC"),
    ];
    let r = no_redirects()
        .post(format!("{}/ges/callbacks/create", e.internal))
        .header("cookie", sue)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(harness::ui::form_body(&create))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    let id = to
        .trim_start_matches("/ges/callbacks/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    (id, to)
}

/// Sets an input's value as a person picking a date would (a `datetime-local` field).
async fn set_value(c: &Client, id: &str, value: &str) {
    c.execute(
        "document.getElementById(arguments[0]).value = arguments[1];",
        vec![json!(id), json!(value)],
    )
    .await
    .unwrap();
}

/// A Supervisor in Chromium: creates a callback, finds it by phone, reschedules it, cancels
/// it, exports the filtered CSV with the session cookie, bulk-cancels by filter after the
/// dry-run count; then a Monitor sees no controls and is refused (403) when posting anyway,
/// and a form without the token is refused. Screenshots 11–17.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_works_callbacks_in_a_browser() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    let b = Browser::start().await;
    let c = &b.client;
    browser_login(c, e, "sue", PASSWORD).await;
    let id = create_in_browser(c, e).await;
    c.goto(&format!("{}/ges/callbacks", e.internal))
        .await
        .unwrap();
    type_into(c, "f-phone", "(202) 555-0142").await;
    click_through(c, Locator::Id("apply-filter")).await;
    let rows = c
        .find_all(Locator::Css("table.callbacks a.open"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    shot(c, "12-callbacks-grid-filtered").await;
    click_through(c, Locator::Css("table.callbacks a.open")).await;
    let later = in_secs(5 * 3600);
    set_value(c, "r-desired", &later[..16]).await;
    click_through(c, Locator::Id("reschedule")).await;
    assert_eq!(text_of(c, "#notice").await, "Callback rescheduled.");
    assert!(
        text_of(c, "#cb-desired")
            .await
            .starts_with(&later[..16].replace('T', " "))
    );
    assert!(
        admin_view(e, "acme", &id).await["desiredTime"]
            .as_str()
            .unwrap()
            .starts_with(&later[..16])
    );
    click_through(c, Locator::Id("cancel")).await;
    assert_eq!(text_of(c, "#notice").await, "Callback cancelled.");
    assert_eq!(text_of(c, "#cb-state").await, "COMPLETED (CANCELLED)");
    assert!(text_of(c, "#history").await.contains("CANCELLED"));
    shot(c, "13-callback-detail-history").await;
    export_in_browser(c, e, &id).await;
    bulk_in_browser(c, &fx).await;
    c.goto(&format!("{}/ges/queues", e.internal)).await.unwrap();
    click_through(c, Locator::Id("logout")).await;
    monitor_in_browser(c, &fx).await;
    b.close().await;
}

/// Opens the create form, fills it as a person would, submits: the new callback's id.
async fn create_in_browser(c: &Client, e: &Engage) -> String {
    c.goto(&format!("{}/ges/callbacks", e.internal))
        .await
        .unwrap();
    c.find(Locator::Css("#create-card summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    type_into(c, "c-phone", "+1 202 555 0142").await;
    let first = in_secs(2 * 3600);
    set_value(c, "c-desired", &first[..16]).await;
    shot(c, "11-callbacks-create").await;
    click_through(c, Locator::Id("create")).await;
    assert_eq!(text_of(c, "#notice").await, "Callback created.");
    text_of(c, "#cb-id").await
}

/// The grid's export link, fetched with the browser's session cookie: the filtered rows.
async fn export_in_browser(c: &Client, e: &Engage, id: &str) {
    c.goto(&format!("{}/ges/callbacks?phone=2025550142", e.internal))
        .await
        .unwrap();
    let href = c
        .find(Locator::Id("export"))
        .await
        .unwrap()
        .prop("href")
        .await
        .unwrap()
        .unwrap();
    let cookie = c.get_named_cookie("ges_session").await.unwrap();
    let r = no_redirects()
        .get(&href)
        .header("cookie", format!("ges_session={}", cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert_eq!(
        (&rows[0][0], &rows[0][2], &rows[0][3]),
        (id, "COMPLETED", "CANCELLED")
    );
    assert_eq!(&rows[0][5], "+12025550142");
}

/// Bulk cancel by the grid's filter: the count, then the cancel on confirmation.
async fn bulk_in_browser(c: &Client, fx: &Fixture) {
    let e = &fx.engage;
    for h in 1..=3 {
        fx.create()
            .service("sales")
            .in_secs(h * 3600 + 600)
            .id()
            .await;
    }
    c.goto(&format!(
        "{}/ges/callbacks?state=SCHEDULED&service=sales",
        e.internal
    ))
    .await
    .unwrap();
    c.set_window_size(390, 844).await.unwrap();
    shot(c, "14-callbacks-grid-phone").await;
    c.set_window_size(1280, 900).await.unwrap();
    click_through(c, Locator::Id("cancel-matching")).await;
    assert!(
        text_of(c, "#bulk-count")
            .await
            .starts_with("3 callbacks would be cancelled")
    );
    shot(c, "15-bulk-cancel-dry-run").await;
    let (_, listed) = e
        .admin_get("/ges/v1/tenants/acme/callbacks?state=SCHEDULED")
        .await;
    assert_eq!(
        listed["data"]["callbacks"].as_array().unwrap().len(),
        3,
        "nothing yet"
    );
    click_through(c, Locator::Id("confirm-bulk")).await;
    assert!(text_of(c, "#bulk-count").await.starts_with("Cancelled 3"));
    let (_, listed) = e
        .admin_get("/ges/v1/tenants/acme/callbacks?state=SCHEDULED")
        .await;
    assert_eq!(listed["data"]["callbacks"].as_array().unwrap().len(), 0);
}

/// A Monitor: no create, cancel, reschedule, bulk or export controls; a cancel posted anyway
/// (with its own token) is a 403 page; a form without the token is refused too.
async fn monitor_in_browser(c: &Client, fx: &Fixture) {
    let e = &fx.engage;
    let id = fx.create().in_secs(4 * 3600).id().await;
    browser_login(c, e, "mo", PASSWORD).await;
    c.goto(&format!("{}/ges/callbacks", e.internal))
        .await
        .unwrap();
    for css in [
        "#create",
        "#cancel-selected",
        "#export",
        "input[type=checkbox]",
    ] {
        assert!(
            c.find(Locator::Css(css)).await.is_err(),
            "a monitor sees {css}"
        );
    }
    shot(c, "16-monitor-callbacks").await;
    c.goto(&format!("{}/ges/callbacks/{id}", e.internal))
        .await
        .unwrap();
    assert!(text_of(c, "#cb-state").await.starts_with("SCHEDULED"));
    for css in ["#cancel", "#reschedule"] {
        assert!(
            c.find(Locator::Css(css)).await.is_err(),
            "a monitor sees {css}"
        );
    }
    submit_forged(c, &format!("/ges/callbacks/{id}/cancel"), true, json!({})).await;
    c.wait()
        .for_element(Locator::Id("error-message"))
        .await
        .unwrap();
    assert!(text_of(c, "h1").await.contains("403"));
    assert!(
        text_of(c, "#error-message")
            .await
            .contains("does not allow")
    );
    shot(c, "17-monitor-cancel-refused").await;
    c.goto(&format!("{}/ges/callbacks", e.internal))
        .await
        .unwrap();
    submit_forged(
        c,
        "/ges/callbacks/create",
        false,
        json!({"service": "sales", "phone": "+12025550177"}),
    )
    .await;
    c.wait()
        .for_element(Locator::Id("error-message"))
        .await
        .unwrap();
    assert!(
        text_of(c, "#error-message")
            .await
            .contains("did not come from this site")
    );
    assert_eq!(admin_view(e, "acme", &id).await["state"], "SCHEDULED");
}

/// The ids the grid's rows link to, in order.
fn row_ids(page: &str) -> Vec<String> {
    page.split("<a href=\"/ges/callbacks/")
        .skip(1)
        .filter_map(|rest| rest.get(..36))
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .map(str::to_string)
        .collect()
}

/// Pages of 250 by keyset: the "Next 250" link keeps the filters and carries the cursor, and
/// every matching callback is shown exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_pages_by_250_and_shows_each_row_once() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    e.service("acme", "bulk", open_service(json!({}))).await;
    let created = e.create_immediate(&fx.key, "bulk", 260, 0).await;
    fx.create().in_secs(3600).id().await;
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let (code, first) = get(
        e,
        &sue,
        "/ges/callbacks?service=bulk&sort=created&order=desc",
    )
    .await;
    assert_eq!(code, 200);
    let mut seen = row_ids(&first);
    assert_eq!(seen.len(), 250);
    let at = first.find("id=\"next-page\" href=\"").unwrap() + "id=\"next-page\" href=\"".len();
    let next = first[at..].split('"').next().unwrap().replace("&amp;", "&");
    assert!(
        next.contains("service=bulk") && next.contains("cursor="),
        "{next}"
    );
    let (code, second) = get(e, &sue, &next).await;
    assert_eq!(code, 200);
    assert!(!second.contains("next-page"), "the last page");
    seen.extend(row_ids(&second));
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    let mut want = created.clone();
    want.sort();
    assert_eq!(
        sorted, want,
        "each of the 260 once, none of another service"
    );
    assert_eq!(seen.len(), 260);
}

/// The running total a bulk-cancel page carries into its "Continue" form, if it has one.
fn carried_total(page: &str) -> Option<String> {
    let at = page.find("name=\"total\" value=\"")? + "name=\"total\" value=\"".len();
    Some(page[at..].split('"').next()?.to_string())
}

/// A bulk cancel by filter of more than one call cancels (1,000, or less near its deadline)
/// shows "Continue" with the running count until every match is cancelled, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_cancel_past_one_call_continues_with_its_running_count() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    e.service("acme", "bulk", open_service(json!({}))).await;
    e.create_immediate(&fx.key, "bulk", 1001, 0).await;
    let keep = fx.create().in_secs(3600).id().await;
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let csrf = csrf_of(&get(e, &sue, "/ges/callbacks").await.1).unwrap();
    let mut total = "0".to_string();
    let mut rounds = 0;
    let last = loop {
        rounds += 1;
        assert!(rounds <= 30, "no end after {rounds} rounds");
        let pairs = [
            ("csrf", csrf.as_str()),
            ("service", "bulk"),
            ("confirm", "yes"),
            ("total", total.as_str()),
        ];
        let (code, page) = post(e, &sue, "/ges/callbacks/bulk-cancel", &pairs).await;
        assert_eq!(code, 200, "{page}");
        match carried_total(&page) {
            Some(t) => {
                assert!(
                    page.contains("Continue")
                        && t.parse::<usize>().unwrap() > total.parse().unwrap()
                );
                total = t;
            }
            None => break page,
        }
    };
    assert!(rounds >= 2, "1001 matches take at least two calls");
    assert!(last.contains("1001 in all"), "{last}");
    let (_, left) = e
        .admin_get("/ges/v1/tenants/acme/callbacks?service=bulk&state=QUEUED")
        .await;
    assert_eq!(
        left["data"]["callbacks"].as_array().unwrap().len(),
        0,
        "{left}"
    );
    assert_eq!(admin_view(e, "acme", &keep).await["state"], "SCHEDULED");
}

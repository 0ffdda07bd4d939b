//! Session 24's attacks (attacker B) on the admin callback query API, the `/ges` admin UI,
//! dispatch pacing and the per-API-key request limit. Each test is an attack that broke
//! something (fixed since) or a battery that tried to and is kept as a guard.

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::{
    ADMIN_TOKEN, Engage, Fixture, TestEnv, WorkerProc, send,
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

/// Milliseconds of a stream entry id (`<ms>-<seq>`: the voice Redis clock when it was added).
fn entry_ms(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Dispatch pacing lines refused callbacks up behind a per-service horizon (docs/pacing.md
/// #placement). When the callbacks placed there never come (a supervisor bulk-cancels a
/// backlog while the service keeps receiving callbacks), the horizon must not delay what is
/// created next: at 10/s, 30 callbacks due at once go out within about 2 s (one second's
/// burst, then 10/s), not behind the cancelled backlog. They waited for the phantom queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_backlog_does_not_delay_what_comes_next() {
    let pace = json!({ "dispatch_rate_per_second": 10 });
    let (env, engage, key) = Fixture::dispatch(TestEnv::new(), "pz1", "paced", pace)
        .await
        .parts();
    engage.create_immediate(&key, "paced", 300, 0).await;
    let _worker = WorkerProc::start(&env, &[]).await;
    env.wait_handoffs(10, Duration::from_secs(20)).await;
    // Every pass has claimed and placed its share: the backlog reaches ~29 s ahead.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (code, body) = send(
        engage
            .http
            .post(format!(
                "{}{BASE}/pz1/callbacks/bulk-cancel",
                engage.internal
            ))
            .bearer_auth(ADMIN_TOKEN)
            .query(&[("service", "paced")]),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["data"]["cancelled"].as_u64().unwrap() > 250, "{body}");
    // 30 due at the same instant, 4 s from now; meanwhile one callback every 400 ms.
    let due = jiff::Timestamp::now() + Duration::from_secs(4);
    let at = harness::wire(due);
    let burst: Vec<String> = join_all((0..30).map(|i| {
        let phone = format!("+1555{:07}", 1_000 + i);
        let (engage, key, at) = (&engage, &key, &at);
        async move {
            engage
                .create(key)
                .service("paced")
                .phone(&phone)
                .at(at)
                .id()
                .await
        }
    }))
    .await;
    let mut i = 2_000;
    while jiff::Timestamp::now() < due {
        engage
            .create(&key)
            .service("paced")
            .phone(&format!("+1555{i:07}"))
            .id()
            .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        i += 1;
    }
    let burst_sent = |entries: &[harness::Entry]| {
        let mut t: Vec<i64> = entries
            .iter()
            .filter(|(_, f)| f.values().any(|v| burst.contains(v)))
            .map(|(id, _)| entry_ms(id))
            .collect();
        t.sort_unstable();
        t
    };
    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed() < Duration::from_secs(30) && times.len() < 30 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        times = burst_sent(&env.handoffs().await);
    }
    assert_eq!(times.len(), 30, "the burst was handed off");
    let last = (times[29] - due.as_millisecond()) as f64 / 1_000.0;
    println!("FIGURE paced_after_cancelled_backlog last_after_due_s={last:.1}");
    assert!(
        last < 4.0,
        "30 callbacks due at once at 10/s: the last went {last} s late"
    );
}

/// The per-API-key request rate is the key's, however the header is spelled: the key is
/// resolved trimmed, so a key with a trailing space or tab is the same key and must share its
/// limit (docs/throttling.md#request-rate-per-api-key). Keyed on the raw header bytes, each
/// spelling had a limit of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_spelled_with_whitespace_shares_its_rate_limit() {
    let env = TestEnv::new()
        .with("API_KEY_RATE_PER_SECOND", "10")
        .with("API_KEY_BURST", "10");
    let engage = Engage::start(&env, &[]).await;
    let key = engage.provision("kr1", "svc", json!({})).await;
    let spellings = [
        key.clone(),
        format!("{key} "),
        format!("{key}\t"),
        format!("{key} \t "),
        format!("{key}\t\t"),
    ];
    let url = format!("{}/engagement/v3/callbacks/retrieve", engage.external);
    let sends = (0..50).map(|i| {
        let req = engage
            .http
            .post(&url)
            .header("x-api-key", spellings[i % spellings.len()].as_str())
            .json(&json!({"id": uuid::Uuid::now_v7().to_string()}));
        send(req)
    });
    let answers = join_all(sends).await;
    let passed = answers.iter().filter(|(code, _)| *code != 429).count();
    for (code, body) in &answers {
        assert!(matches!(code, 404 | 429), "{code} {body}");
    }
    assert!(
        passed <= 12,
        "{passed} of 50 passed a limit of 10 (burst 10)"
    );
}

/// Bulk cancel by filter stops 4 s before its request's deadline and says `more: true`
/// (docs/admin-queries.md#bulk-cancel). With `REQUEST_TIMEOUT_MS` of 3 s that moment was
/// before the call began: every call cancelled nothing and answered `more: true`, so the UI's
/// loop ("call again while more") never ended and never cancelled anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cancel_by_filter_progresses_under_a_short_request_timeout() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "3000");
    let settings = harness::open_service(json!({}));
    let fx = Fixture::with(env, &[], "acme", "sales", settings).await;
    for _ in 0..20 {
        fx.create().in_secs(7200).id().await;
    }
    let url = format!("{}{BASE}/acme/callbacks/bulk-cancel", fx.engage.internal);
    let mut cancelled = 0;
    for call in 0..5 {
        let req = fx
            .engage
            .http
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .query(&[("service", "sales")]);
        let (code, body) = send(req).await;
        assert_eq!(code, 200, "call {call}: {body}");
        cancelled += body["data"]["cancelled"].as_u64().unwrap();
        if body["data"]["more"] == json!(false) {
            break;
        }
    }
    assert_eq!(cancelled, 20, "20 callbacks, 5 calls");
    let live = fx
        .env
        .count("SELECT count(*) FROM callbacks WHERE state <> 'COMPLETED'")
        .await;
    assert_eq!(live, 0);
}

/// Odd input on every admin callback route answers below 500 and never hangs: raw query
/// strings (bad escapes, non-UTF-8, huge, extreme times and zones), odd ids, odd bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_input_on_the_admin_callback_api_is_never_a_5xx() {
    let fx = Fixture::start(harness::open_service(json!({}))).await;
    let e = &fx.engage;
    let id = fx.create().in_secs(7200).id().await;
    let long = "9".repeat(20_000);
    let queries = [
        "state=%FF",
        "%FF=1",
        "service=%C3%28",
        "limit=-1",
        "limit=99999999999999999999999",
        "limit=1e3",
        "desiredFrom=%2B275760-09-13T00:00:00Z",
        "desiredFrom=-009999-01-01T00:00:00Z",
        "desiredFrom=9999-12-31T23:59:59.999999999Z",
        "desiredTo=0000-01-01",
        "createdFrom=2027-03-14T02:30&tz=America/New_York",
        "tz=../../../../etc/passwd",
        "tz=UTC%00",
        "tz=%2B99:00",
        "phone=%00",
        "phone=%2B",
        "phone=%2B99999999999999999999999999",
        "state=SCHEDULED,,",
        "state=%20,%20",
        "reason=cancelled",
        "sort=created&order=desc&cursor=00",
        "format=csv&limit=250",
        "format=csv&tz=Pacific/Kiritimati&desiredFrom=2020-01-01",
    ];
    let base = format!("{}{BASE}/acme/callbacks", e.internal);
    let mut urls: Vec<String> = queries.iter().map(|q| format!("{base}?{q}")).collect();
    urls.push(format!("{base}?service={long}"));
    urls.push(format!("{base}?cursor={long}"));
    urls.push(format!("{base}.csv?phone={}", "1".repeat(300)));
    for path in [
        format!("/{id}"),
        "/%00".into(),
        "/%FF%FE".into(),
        format!("/{}", "a".repeat(5_000)),
        format!("/{}", id.to_uppercase()),
        format!("/{{{id}}}"),
    ] {
        urls.push(format!("{base}{path}"));
    }
    for url in &urls {
        let (code, body) = send(e.http.get(url).bearer_auth(ADMIN_TOKEN)).await;
        assert!(code < 500, "GET {url:.200}: {code} {body}");
    }
    let bodies = [
        json!({"desiredTime": "9999-12-31T23:59:59Z"}),
        json!({"desiredTime": "+275760-09-13T00:00:00Z"}),
        json!({"desiredTime": 5}),
        json!({"desiredTime": "2020-01-01T00:00:00Z"}),
        json!({"userData": "x"}),
        json!({"userData": {"k": "\u{0000}"}}),
        json!({"userData": {"\u{0000}": 1}}),
        json!([]),
        json!({"desiredTime": null, "userData": null}),
        json!({"id": id}),
    ];
    for body in &bodies {
        for path in ["reschedule", "cancel"] {
            let url = format!("{base}/{id}/{path}");
            let (code, answer) = send(e.http.post(&url).bearer_auth(ADMIN_TOKEN).json(body)).await;
            assert!(code < 500, "POST {path} {body}: {code} {answer}");
        }
    }
    let bulk = format!("{base}/bulk-cancel");
    for body in [
        json!({"ids": [null, 1, {}, "x", "", id, id]}),
        json!({"ids": "x"}),
        json!({"ids": vec!["x"; 1001]}),
        json!({"ids": [], "more": 1}),
        json!({"ids": [format!("{id}\u{0000}")]}),
    ] {
        for q in ["", "?dryRun=true", "?dryRun=1", "?service=sales"] {
            let url = format!("{bulk}{q}");
            let (code, answer) = send(e.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&body)).await;
            assert!(code < 500, "bulk {q} {body:.100}: {code} {answer}");
        }
    }
    for raw in ["{", "\u{feff}{\"ids\":[]}", "null", "{\"ids\":[1,2,3]}{}"] {
        let req = e.http.post(&bulk).bearer_auth(ADMIN_TOKEN).body(raw);
        let (code, answer) = send(req).await;
        assert!(code < 500, "bulk {raw:?}: {code} {answer}");
    }
}

/// POSTs a raw form body with a session cookie: (status, body text).
async fn post_raw(e: &Engage, cookie: &str, path: &str, body: String) -> (u16, String) {
    let r = no_redirects()
        .post(format!("{}{path}", e.internal))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Odd forms and queries on every UI page and action, as an Administrator with a valid CSRF
/// token, answer below 500: odd grid cells and times, huge and non-UTF-8 values, another
/// tenant's object names, odd `corrId`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_forms_on_the_ui_are_never_a_5xx() {
    let fx = Fixture::start(harness::open_service(json!({}))).await;
    let e = &fx.engage;
    let body =
        json!({"username": "ada", "password": "correct horse battery", "role": "Administrator"});
    assert_eq!(
        e.admin_post("/ges/v1/tenants/acme/users", body).await.0,
        200
    );
    let weekly: serde_json::Map<String, Value> = (1..=7)
        .map(|d| (d.to_string(), json!({"0900": 2})))
        .collect();
    let rule = json!({"slot_minutes": 60, "weekly": weekly});
    let (code, answer) = e
        .admin_put("/ges/v1/tenants/acme/capacity-rules/r1", rule)
        .await;
    assert_eq!(code, 201, "{answer}");
    let cookie = harness::ui::ui_login(e, "acme", "ada", "correct horse battery")
        .await
        .unwrap();
    let (_, page) = {
        let r = no_redirects()
            .get(format!("{}/ges/config/capacity", e.internal))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let csrf = csrf_of(&page).unwrap();
    let c = format!("csrf={csrf}");
    let big = "9".repeat(100_000);
    let forms = [
        (
            "/ges/config/capacity/r1",
            format!("{c}&c_1_0900=99999999999999999999999"),
        ),
        ("/ges/config/capacity/r1", format!("{c}&c_1_0900=-1")),
        ("/ges/config/capacity/r1", format!("{c}&c_1_2500=1")),
        ("/ges/config/capacity/r1", format!("{c}&c_1_=1")),
        ("/ges/config/capacity/r1", format!("{c}&c__0900=1")),
        ("/ges/config/capacity/r1", format!("{c}&c_1_09%FF=1")),
        (
            "/ges/config/capacity/r1",
            format!("{c}&c_1_0900=1&c_1_0900=2"),
        ),
        (
            "/ges/config/capacity/r1",
            format!("{c}&new_time=%EF%BC%90%EF%BC%99:00"),
        ),
        ("/ges/config/capacity/r1", format!("{c}&new_time={big}")),
        ("/ges/config/capacity/r1", format!("{c}&new_time=24:00")),
        ("/ges/config/capacity/r1", format!("{c}&c_1_0900=1000001")),
        ("/ges/config/capacity/nope", format!("{c}&c_1_0900=1")),
        ("/ges/config/capacity/%00", format!("{c}&c_1_0900=1")),
        ("/ges/config/number-rules/test", format!("{c}&number=%00")),
        (
            "/ges/config/number-rules/test",
            format!("{c}&number=1&rule=%00"),
        ),
        (
            "/ges/config/number-rules/test",
            format!("{c}&number=1&rule=nope"),
        ),
        (
            "/ges/config/number-rules/test",
            format!("{c}&number={}", "1".repeat(64)),
        ),
        ("/ges/config/number-rules/test", c.clone()),
        ("/ges/developer/validate-key", format!("{c}&key=%00")),
        ("/ges/developer/validate-key", format!("{c}&key={big}")),
        ("/ges/developer/validate-key", format!("{c}&key=%FF%FE")),
        ("/ges/developer/refetch", format!("{c}&x=1")),
        ("/ges/logout", format!("{c}&csrf={csrf}")),
    ];
    for (path, form) in &forms {
        let (code, text) = post_raw(e, &cookie, path, form.clone()).await;
        assert!(code < 500, "POST {path} {form:.120}: {code} {text:.300}");
        assert!(
            code != 401 && code != 403,
            "the session and its token hold: {path} {code}"
        );
    }
    for q in [
        "corrId=%00",
        "corrId=%FF",
        "corrId=x",
        "corrId=",
        "expired=%FF",
    ] {
        for path in ["/ges/developer", "/ges/login", "/ges/queues"] {
            let r = no_redirects()
                .get(format!("{}{path}?{q}", e.internal))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            assert!(code < 500, "GET {path}?{q}: {code}");
        }
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The peak RSS (kB) of `pid` while `work` runs, sampled every 10 ms.
async fn peak_rss<T>(pid: u32, work: impl Future<Output = T>) -> (u64, T) {
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kb(pid)));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let out = work.await;
    sampler.abort();
    (peak.load(std::sync::atomic::Ordering::Relaxed), out)
}

/// A page of the admin listing (and a batch of the export) holds its rows in memory; a
/// callback's `userData` is bounded only by the public port's body limit (500 KB), so anyone
/// with the app's API key can make each row ~400 KB. A page of 1,000 such rows must not cost
/// the server hundreds of megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_user_data_does_not_blow_up_a_page_or_an_export() {
    let fx = Fixture::start(harness::open_service(json!({}))).await;
    let e = &fx.engage;
    let blob = "x".repeat(400_000);
    fx.create()
        .in_secs(3600)
        .user_data(json!({ "blob": blob }))
        .id()
        .await;
    fx.env
        .pg()
        .await
        .batch_execute(
            "INSERT INTO callbacks (id, tenant_id, service, state, phone_number, phone_e164,
                                    desired_time, dispatch_at, scheduled, user_data)
             SELECT gen_random_uuid(), tenant_id, service, state, phone_number, phone_e164,
                    desired_time + make_interval(secs => i), dispatch_at, scheduled, user_data
             FROM callbacks, generate_series(1, 399) i",
        )
        .await
        .unwrap();
    let pid = e.proc.child.id();
    let before = rss_kb(pid);
    let (peak, (code, body)) = peak_rss(pid, list(e, "acme", &[("limit", "1000")])).await;
    assert_eq!(code, 200);
    let n = body["data"]["callbacks"].as_array().unwrap().len();
    println!("FIGURE big_user_data_page rows={n} rss_before_kb={before} rss_peak_kb={peak}");
    assert!(
        n >= 1 && body["data"]["nextCursor"].is_string(),
        "a short page says more follow"
    );
    let (peak2, bytes) = peak_rss(pid, async {
        let r = e
            .http
            .get(format!("{}{BASE}/acme/callbacks.csv", e.internal))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap().len()
    })
    .await;
    println!("FIGURE big_user_data_export bytes={bytes} rss_peak_kb={peak2}");
    assert!(bytes > 400 * 400_000, "every row exported: {bytes} bytes");
    let (peak3, (code, answer)) = peak_rss(pid, async {
        let url = format!("{}{BASE}/acme/callbacks/bulk-cancel", e.internal);
        let req = e
            .http
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .query(&[("service", "sales")]);
        send(req).await
    })
    .await;
    assert_eq!(code, 200, "{answer}");
    println!(
        "FIGURE big_user_data_bulk_cancel cancelled={} rss_peak_kb={peak3}",
        answer["data"]["cancelled"]
    );
    assert_eq!(answer["data"]["cancelled"], 400, "{answer}");
    assert!(
        peak3 - before < 100_000,
        "a bulk cancel took {} MB",
        (peak3 - before) / 1000
    );
    assert!(
        peak - before < 100_000,
        "a page took {} MB",
        (peak - before) / 1000
    );
    assert!(
        peak2 - before < 100_000,
        "an export took {} MB",
        (peak2 - before) / 1000
    );
}

/// A push target's registration token is a credential of the customer's device: retrieve shows
/// only its channel (docs/push.md#what-callers-see), and so must every admin read (listing,
/// detail, CSV export). The admin view showed the stored attributes as they were, tokens
/// included (found by attacker A, `attack_s24a::no_admin_read_shows_a_device_token`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reads_never_show_a_device_token() {
    let fx = Fixture::start(json!({})).await;
    let token = "fcm-device-token-s24b-0123456789";
    let id = fx
        .create()
        .field("pushTargets", json!([{"channel": "FCM", "target": token}]))
        .id()
        .await;
    for path in [
        format!("{BASE}/acme/callbacks/{id}"),
        format!("{BASE}/acme/callbacks"),
        format!("{BASE}/acme/callbacks?format=csv"),
    ] {
        let r = fx
            .engage
            .http
            .get(format!("{}{path}", fx.engage.internal))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let text = r.text().await.unwrap();
        assert!(text.contains(&id), "{path}: {text}");
        assert!(!text.contains(token), "{path}: {text}");
    }
    let (_, body) = list(&fx.engage, "acme", &[]).await;
    let targets = &body["data"]["callbacks"][0]["attrs"]["pushTargets"];
    assert_eq!(targets, &json!([{"channel": "FCM"}]), "{body}");
}

/// Each service of a tenant paces on its own (docs/pacing.md): a service's placement
/// horizon was stored in the field `s:<name>~h`, which is also the bucket of a service named
/// `<name>~h` (a valid name), so a backlog of `x` stalled every callback of `x~h` for as long
/// as the backlog lasted (~19 s at 10/s for 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_named_like_a_horizon_field_paces_on_its_own() {
    let pace = json!({ "dispatch_rate_per_second": 10 });
    let fx = Fixture::dispatch(TestEnv::new(), "pz2", "x", pace.clone()).await;
    fx.engage
        .service("pz2", "x~h", harness::open_service(pace))
        .await;
    let (env, engage, key) = fx.parts();
    engage.create_immediate(&key, "x", 200, 0).await;
    let _worker = WorkerProc::start(&env, &[]).await;
    env.wait_handoffs(10, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let started = Instant::now();
    let ids = engage.create_immediate(&key, "x~h", 5, 1_000).await;
    let sent = |entries: &[harness::Entry]| {
        entries
            .iter()
            .filter(|(_, f)| f.values().any(|v| ids.contains(v)))
            .count()
    };
    while started.elapsed() < Duration::from_secs(30) && sent(&env.handoffs().await) < 5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    println!(
        "FIGURE other_service_after_backlog took_s={:.1}",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(4),
        "5 callbacks of x~h waited {took:?}"
    );
}

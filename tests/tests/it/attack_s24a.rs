//! Session 24's attacks (attacker A) on what sessions 23–24 built: the credentials vault and
//! its admin API, CAPTCHA on create, Click-To-Call-In, the GWS statistics proxy and EWT mode3,
//! and FCM push. Each test is an attack that broke something (fixed since) or a battery that
//! tried to and is kept as a guard.

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::{
    Engage, FakeGws, Fixture, GwsMode, TestEnv, WorkerProc, fake_fcm::FakeFcm, message,
    open_service, siteverify::FakeSiteverify,
};
use serde_json::{Value, json};

/// Real CAPTCHA tokens are long: Google's reCAPTCHA v2 tokens are about 560 characters, v3
/// and hCaptcha tokens often over 1,500. A `captcha_required` service refused every one of
/// them with 400 "captchaToken is too long (at most 255 characters)": the CAPTCHA check
/// passed only the fake's short tokens.
#[tokio::test]
async fn captcha_tokens_of_real_length_are_verified_not_refused() {
    let fake = FakeSiteverify::start("s3cret").await;
    let env = TestEnv::new()
        .with("CAPTCHA_VERIFY_URL", &fake.url)
        .with("CAPTCHA_TIMEOUT_MS", "2000");
    let fx = Fixture::with(env, &[], "acme", "sales", json!({"captcha_required": true})).await;
    let (code, body) = fx
        .engage
        .admin_put(
            "/ges/v1/tenants/acme/credentials/captcha",
            json!({"secret": "s3cret"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    for len in [560, 2_000, 4_000] {
        let token = fake.issue_sized(len);
        let (code, body) = fx.create().field("captchaToken", json!(token)).send().await;
        assert_eq!(code, 200, "a {len}-character token: {body}");
        // Single use still holds.
        let (code, body) = fx.create().field("captchaToken", json!(token)).send().await;
        assert_eq!(code, 400, "{body}");
        assert!(message(&body).contains("timeout-or-duplicate"), "{body}");
    }
    // Still bounded: a token of 64 KiB is refused without asking the verifier.
    let calls = fake.calls();
    let (code, body) = fx
        .create()
        .field("captchaToken", json!("x".repeat(65_536)))
        .send()
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(message(&body).contains("captchaToken"), "{body}");
    assert_eq!(fake.calls(), calls);
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 3);
}

/// EWT mode3 asks GWS once per queue. With GWS hanging, the queues were asked one after the
/// other, each waiting `GWS_TIMEOUT_MS`: ten queues took ten timeouts, past the request's
/// deadline, and the whole answer was a 503 instead of the documented in-band `-1` per queue.
#[tokio::test]
async fn ewt_mode3_over_many_queues_with_gws_hanging_answers_in_band_in_time() {
    let gws = FakeGws::start().await;
    let env = TestEnv::new()
        .with("GWS_TIMEOUT_MS", "700")
        .with("REQUEST_TIMEOUT_MS", "3000");
    let (_env, e, key) = harness::serve_tenant(env, "acme").await;
    let (code, body) = e
        .admin_put("/ges/v1/tenants/acme/credentials/gws", gws.credentials())
        .await;
    assert_eq!(code, 200, "{body}");
    let names: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    for name in &names {
        e.service("acme", name, json!({"ewt_statistic": "EWT"}))
            .await;
    }
    let path = format!(
        "/engagement/v3/estimated-wait-time?mode=mode3&virtual-queues={}",
        names.join(",")
    );
    // GWS answering: every queue gets its value, with one token for all of them.
    gws.set_value("EWT", json!(30));
    let (code, body) = e.get(&key, &path).await;
    assert_eq!(code, 200, "{body}");
    let items = body["data"].as_array().unwrap();
    assert_eq!(items.len(), 10, "{body}");
    assert!(items.iter().all(|i| i["estimatedWaitTime"] == 30), "{body}");
    assert_eq!(gws.token_calls(), 1);

    // GWS hanging (new statistic, so nothing is cached): in band, within the deadline.
    for name in &names {
        e.service("acme", name, json!({"ewt_statistic": "EWT2"}))
            .await;
    }
    gws.set_mode(GwsMode::Hang);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let started = Instant::now();
    let (code, body) = e.get(&key, &path).await;
    assert_eq!(code, 200, "after {:?}: {body}", started.elapsed());
    assert!(started.elapsed() < Duration::from_millis(2_900));
    let items = body["data"].as_array().unwrap();
    assert_eq!(items.len(), 10, "{body}");
    for item in items {
        assert_eq!(item["estimatedWaitTime"], -1, "{body}");
        assert!(
            item["message"].as_str().unwrap().contains("unavailable"),
            "{body}"
        );
    }
}

/// The push watcher looked only at the 200 longest-waiting callbacks with push targets that
/// were not yet owed their `CALLBACK_UPCOMING`. 200 callbacks whose estimate stays unknown
/// (a service no agent has taken a call of yet) filled that window for good: no other
/// callback, of any tenant, was ever notified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_unnotifiable_callbacks_do_not_starve_another_tenants_push() {
    let fcm = FakeFcm::start().await;
    let env = TestEnv::new()
        .with("FCM_URL", &fcm.url)
        .with("FCM_TIMEOUT_MS", "500")
        .with("PUSH_WATCH_MS", "100")
        .with("PUSH_SEND_MS", "100");
    let fx = Fixture::dispatch(env, "flood", "wall", json!({"push_threshold_minutes": 60})).await;
    let (env, e, flood_key) = fx.parts();
    let app_key = e
        .provision(
            "pushco",
            "app",
            open_service(json!({"push_threshold_minutes": 60})),
        )
        .await;
    let (code, body) = e
        .admin_put(
            "/ges/v1/tenants/pushco/credentials/fcm",
            fcm.service_account.clone(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let _w = WorkerProc::start(&env, &[]).await;
    // 201 callbacks of the flood tenant first, none of whose estimates can be known.
    for chunk in 0..3 {
        join_all((0..67).map(|i| push_create(&e, &flood_key, "wall", format!("f{chunk}-{i}"))))
            .await;
    }
    assert_eq!(env.wait_submitted(201, Duration::from_secs(30)).await, 201);
    let b: Vec<String> =
        join_all(["b1", "b2", "b3"].map(|d| push_create(&e, &app_key, "app", d.into()))).await;
    assert_eq!(env.wait_submitted(204, Duration::from_secs(20)).await, 204);
    // Two calls taken by agents: b3's estimate is known (nobody ahead: 0 s, below 60 min).
    for id in &b[..2] {
        let (code, body) = e.event(id, json!({"state": "PROCESSING"})).await;
        assert_eq!(code, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let cb = e.retrieve(&app_key, &b[2]).await;
    assert_eq!(cb["estimatedWaitTime"], 0, "{cb}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fcm.delivered("b3", "CALLBACK_UPCOMING") == 0 {
        assert!(
            Instant::now() < deadline,
            "b3 never told CALLBACK_UPCOMING behind 201 unnotifiable callbacks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A create with one FCM push target named `device` on `service`; its id.
async fn push_create(e: &Engage, key: &str, service: &str, device: String) -> String {
    e.create(key)
        .service(service)
        .phone(&harness::next_phone())
        .field("pushTargets", json!([{"channel": "FCM", "target": device}]))
        .id()
        .await
}

/// Every route of this area given text PostgreSQL cannot store (NUL), wrong types, huge and
/// unicode values, unknown tenants and kinds: a 4xx in the envelope, never a 5xx. Kept as a
/// guard (nothing broke).
#[tokio::test]
async fn bad_input_across_credentials_call_in_statistics_and_match_is_4xx() {
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let nul = "a\u{0}b";
    let creds = |tenant: &str, kind: &str| format!("/ges/v1/tenants/{tenant}/credentials/{kind}");
    let mut answers = Vec::new();
    for (tenant, kind) in [
        ("a%00b", "gws"),
        ("acme", "a%00b"),
        ("nope", "fcm"),
        ("ü", "gws"),
    ] {
        for m in [reqwest::Method::GET, reqwest::Method::DELETE] {
            answers.push((
                format!("{m} {tenant}/{kind}"),
                e.admin(m, &creds(tenant, kind), None).await,
            ));
        }
        let body = json!({"secret": "s"});
        let what = format!("PUT {tenant}/{kind}");
        answers.push((what, e.admin_put(&creds(tenant, kind), body).await));
    }
    for body in [
        json!({"secret": nul}),
        json!({"secret": "s", "siteKey": nul}),
        json!({"secret": ["s"]}),
        json!({"secret": "s".repeat(100_000)}),
        json!("secret"),
        json!(null),
    ] {
        answers.push((
            format!("captcha {body:.40}"),
            e.admin_put(&creds("acme", "captcha"), body).await,
        ));
    }
    for body in [
        json!({"clientId": nul, "clientSecret": "s", "authUrl": "http://x", "statisticsUrl": "http://x"}),
        json!({"clientId": "c", "clientSecret": "s", "authUrl": "http://\u{0}x", "statisticsUrl": "http://x"}),
        json!({"clientId": "c", "clientSecret": "s", "authUrl": "http://ü.example", "statisticsUrl": 5}),
    ] {
        answers.push((
            format!("gws {body:.40}"),
            e.admin_put(&creds("acme", "gws"), body).await,
        ));
    }
    for body in [
        json!({"project_id": nul, "client_email": "a@b", "private_key": "x"}),
        json!({"project_id": "p", "client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\n\u{0}\n-----END PRIVATE KEY-----"}),
        json!({"project_id": "p", "client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "type": 5}),
    ] {
        answers.push((
            format!("fcm {body:.40}"),
            e.admin_put(&creds("acme", "fcm"), body).await,
        ));
    }
    crate::call_in::group(
        &e,
        "acme",
        "G",
        json!({"numbers": ["+16505557000"], "access_codes": true}),
    )
    .await;
    for body in [
        json!({"groupName": nul}),
        json!({"groupName": "G", "fromPhoneNumber": nul}),
        json!({"groupName": "G", "userData": {"k": nul}}),
        json!({"groupName": "G", "callbackServiceId": nul}),
        json!({"groupName": "G", "callbackServiceId": 12}),
        json!({"groupName": "Ǵ".repeat(300)}),
    ] {
        let what = format!("call-in {body:.40}");
        answers.push((
            what,
            e.post(&key, "/engagement/v3/call-in/requests/create", body)
                .await,
        ));
    }
    let matched = |body: Value| {
        harness::send(
            e.http
                .post(format!("{}/ges/v1/call-in/match", e.internal))
                .bearer_auth(harness::ORS_EVENTS_TOKEN)
                .json(&body),
        )
    };
    for body in [
        json!({"toPhoneNumber": nul}),
        json!({"toPhoneNumber": "+16505557000", "accessCode": nul}),
        json!({"toPhoneNumber": "+16505557000", "accessCode": 99_999_999_999_i64}),
        json!({"toPhoneNumber": "+16505557000", "accessCode": 1.5}),
        json!({"toPhoneNumber": "+16505557000", "accessCode": "１２３４"}),
        json!({"toPhoneNumber": "+16505557000", "fromPhoneNumber": nul}),
        json!({"toPhoneNumber": 16505557000_i64}),
        json!([]),
    ] {
        answers.push((format!("match {body:.40}"), matched(body).await));
    }
    let stats = "/engagement/v3/statistics/operations/get-statistic-ex";
    answers.push((
        "statistics without creds".into(),
        e.post(&key, stats, json!({"a": nul})).await,
    ));
    for (what, (code, body)) in answers {
        assert!((400..500).contains(&code), "{what}: {code} {body}");
        assert!(body["status"]["message"].is_string(), "{what}: {body}");
    }
}

/// A push target's registration token is a credential of the customer's device: retrieve shows
/// only its channel (docs/push.md#what-callers-see). The admin callback API (listing, detail,
/// CSV export) showed the stored attributes as they are, tokens included.
#[tokio::test]
async fn no_admin_read_shows_a_device_token() {
    let fx = Fixture::start(json!({})).await;
    let token = "fcm-device-token-0123456789";
    let id = fx
        .create()
        .field("pushTargets", json!([{"channel": "FCM", "target": token}]))
        .id()
        .await;
    let cb = fx.retrieve(&id).await;
    assert!(!cb.to_string().contains(token), "{cb}");
    for path in [
        format!("/ges/v1/tenants/acme/callbacks/{id}"),
        "/ges/v1/tenants/acme/callbacks".to_string(),
    ] {
        let (code, body) = fx.engage.admin_get(&path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(body.to_string().contains(&id), "{path}: {body}");
        assert!(!body.to_string().contains(token), "{path}: {body}");
    }
    let csv = fx
        .engage
        .http
        .get(format!(
            "{}/ges/v1/tenants/acme/callbacks.csv",
            fx.engage.internal
        ))
        .bearer_auth(harness::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains(&id) && !csv.contains(token), "{csv}");
}

/// The FCM access token is cached per tenant, "one token request per tenant and worker an
/// hour" (docs/push.md#cost); but the sender sends a pass's messages concurrently, and every
/// one of them that found no cached token fetched its own: five callbacks routed together made
/// five token requests (two hundred a pass at most).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_a_tenant_share_one_access_token() {
    let fcm = FakeFcm::start().await;
    let env = TestEnv::new()
        .with("FCM_URL", &fcm.url)
        .with("PUSH_WATCH_MS", "100")
        .with("PUSH_SEND_MS", "3000");
    let settings = json!({"call_direction": "USERORIGINATED", "push_threshold_minutes": 0});
    let fx = Fixture::dispatch(env, "pushco", "app", settings).await;
    let (env, e, key) = fx.parts();
    let (code, body) = e
        .admin_put(
            "/ges/v1/tenants/pushco/credentials/fcm",
            fcm.service_account.clone(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let _w = WorkerProc::start(&env, &[]).await;
    let devices: Vec<String> = (0..5).map(|i| format!("dev-{i}")).collect();
    let ids = join_all(
        devices
            .iter()
            .map(|d| push_create(&e, &key, "app", d.clone())),
    )
    .await;
    assert_eq!(env.wait_submitted(5, Duration::from_secs(10)).await, 5);
    for r in join_all(
        ids.iter()
            .map(|id| e.event(id, json!({"state": "ROUTING"}))),
    )
    .await
    {
        assert_eq!(r.0, 200, "{}", r.1);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while devices
        .iter()
        .any(|d| fcm.delivered(d, "CALLBACK_READY") == 0)
    {
        assert!(Instant::now() < deadline, "not all delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fcm.seen(|s| s.tokens_issued), 1);
}

/// A GWS that throttles (429) or times a request out (408) did not reject anything: it asks to
/// be asked later. The token endpoint's 429 answered 401 "GWS rejected this tenant's GWS
/// client credentials" and counted `GWS_INCORRECT_CLIENT_CREDENTIALS` (an alert telling an
/// administrator to fix credentials that are fine); the statistics call's 429 answered 400
/// "GWS refused the statistics request" (telling the caller its body is wrong).
#[tokio::test]
async fn a_throttling_gws_is_unavailable_not_a_credentials_or_body_error() {
    use axum::{Router, http::StatusCode, routing::post};
    let throttled = |code: u16| {
        let status = StatusCode::from_u16(code).unwrap();
        move || async move {
            let body = json!({"status": {"code": code, "message": "slow down"}});
            (status, [("retry-after", "30")], axum::Json(body))
        }
    };
    let token = || async {
        axum::Json(json!({"access_token": "t0k", "token_type": "bearer", "expires_in": 3600}))
    };
    let mut bases = Vec::new();
    for (token_code, stat_code) in [(429, 200), (408, 200), (200, 429), (200, 408)] {
        let mut app = Router::new();
        app = match token_code {
            200 => app.route("/auth/v3/oauth/token", post(token)),
            c => app.route("/auth/v3/oauth/token", post(throttled(c))),
        };
        app = app.route(
            "/statistics/v3/operations/get-statistic-ex",
            post(throttled(stat_code)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let before = e.metric_sum("GWS_INCORRECT_CLIENT_CREDENTIALS").await;
    for base in bases {
        let creds = json!({"clientId": "c", "clientSecret": "s", "authUrl": base,
                           "statisticsUrl": base});
        let (code, body) = e
            .admin_put("/ges/v1/tenants/acme/credentials/gws", creds)
            .await;
        assert_eq!(code, 200, "{body}");
        let stats = "/engagement/v3/statistics/operations/get-statistic-ex";
        let ask = json!({"data": {"statistics": [{"name": "X", "objectId": "q", "objectType": "Queue"}]}});
        let (code, body) = e.post(&key, stats, ask).await;
        assert_eq!(code, 503, "{base}: {body}");
    }
    assert_eq!(
        e.metric_sum("GWS_INCORRECT_CLIENT_CREDENTIALS").await,
        before
    );
}

/// The voice platform's match consumes the request. When its `UPDATE … SET state =
/// 'consumed'` waited (a row lock held by another statement) past the request's deadline, the
/// match answered 503, but the statement was already sent: it committed once the lock was
/// released, and the voice platform's retry got 404 "already matched": the customer's call
/// was matched to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_given_up_at_its_deadline_leaves_the_request_matchable() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1500");
    let (env, e, key) = harness::serve_tenant(env, "acme").await;
    crate::call_in::group(
        &e,
        "acme",
        "G",
        json!({"numbers": ["+16505558000"], "lifetime_seconds": 600}),
    )
    .await;
    let (code, body) = e
        .post(
            &key,
            "/engagement/v3/call-in/requests/create",
            json!({"groupName": "G"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    let matched = || {
        harness::send(
            e.http
                .post(format!("{}/ges/v1/call-in/match", e.internal))
                .bearer_auth(harness::ORS_EVENTS_TOKEN)
                .json(&json!({"toPhoneNumber": "+16505558000"})),
        )
    };
    // Another statement holds the request's row for 3 s.
    let mut pg = env.pg().await;
    let tx = pg.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM call_in_requests FOR UPDATE", &[])
        .await
        .unwrap();
    let (code, body) = matched().await;
    assert_eq!(code, 503, "{body}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    tx.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (code, body) = matched().await;
    assert_eq!(code, 200, "the retry after a 503: {body}");
    assert_eq!(body["data"]["id"], id.as_str(), "{body}");
    let (code, body) = matched().await;
    assert_eq!(code, 404, "consumed once: {body}");
}

/// A call-in create that gives up at its deadline (503) while its `INSERT` waits must not leave
/// a live request behind: it held its pair until it expired, so the customer's retry found the
/// group exhausted (429) for the whole lifetime of a request nobody was told about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_create_given_up_at_its_deadline_holds_no_pair() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1500");
    let (env, e, key) = harness::serve_tenant(env, "acme").await;
    crate::call_in::group(
        &e,
        "acme",
        "One",
        json!({"numbers": ["+16505559000"], "lifetime_seconds": 600}),
    )
    .await;
    let create = || {
        e.post(
            &key,
            "/engagement/v3/call-in/requests/create",
            json!({"groupName": "One"}),
        )
    };
    // Another transaction is inserting a request on the same pair: the create's insert waits.
    let mut pg = env.pg().await;
    let tx = pg.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO call_in_requests (id, tenant_id, group_name, to_number, expires_at)
         VALUES (gen_random_uuid(), 'acme', 'One', '+16505559000', now() + interval '1 hour')",
        &[],
    )
    .await
    .unwrap();
    let (code, body) = create().await;
    assert_eq!(code, 503, "{body}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    tx.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (code, body) = create().await;
    assert_eq!(code, 200, "the retry after a 503: {body}");
    let live: i64 = pg
        .query_one(
            "SELECT count(*) FROM call_in_requests WHERE state = 'live'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 1);
}

/// A token endpoint (`token_uri`, per tenant) answering with an absurd `expires_in`
/// (`u64::MAX`): the FCM client added it to `Instant::now()`, which panics on overflow, inside
/// the worker's push sender: its task died and no push of any tenant was sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_token_lifetime_from_one_tenant_does_not_stop_push_for_others() {
    use axum::{Router, routing::post};
    let fcm = FakeFcm::start().await;
    let bad = Router::new().route(
        "/token",
        post(|| async {
            axum::Json(json!({"access_token": "x", "token_type": "Bearer",
                              "expires_in": u64::MAX}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad_uri = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, bad).await });
    let env = TestEnv::new()
        .with("FCM_URL", &fcm.url)
        .with("PUSH_SEND_MS", "100")
        .with("PUSH_BACKOFF_MS", "100");
    let settings = json!({"call_direction": "USERORIGINATED", "push_threshold_minutes": 0});
    let fx = Fixture::dispatch(env, "badco", "app", settings.clone()).await;
    let (env, e, bad_key) = fx.parts();
    let good_key = e.provision("goodco", "app", open_service(settings)).await;
    let mut account = fcm.service_account.clone();
    account["token_uri"] = json!(bad_uri);
    for (tenant, body) in [("badco", account), ("goodco", fcm.service_account.clone())] {
        let path = format!("/ges/v1/tenants/{tenant}/credentials/fcm");
        let (code, answer) = e.admin_put(&path, body).await;
        assert_eq!(code, 200, "{answer}");
    }
    let _w = WorkerProc::start(&env, &[]).await;
    let b = push_create(&e, &bad_key, "app", "dev-bad".into()).await;
    let g = push_create(&e, &good_key, "app", "dev-good".into()).await;
    assert_eq!(env.wait_submitted(2, Duration::from_secs(10)).await, 2);
    assert_eq!(e.event(&b, json!({"state": "ROUTING"})).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(e.event(&g, json!({"state": "ROUTING"})).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fcm.delivered("dev-good", "CALLBACK_READY") == 0 {
        assert!(
            Instant::now() < deadline,
            "the good tenant's push never went"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same absurd `expires_in` from a tenant's GWS token endpoint: the statistics request
/// panicked (500). It is a 200 with GWS's answer (the token is used, and refreshed within a
/// day like any other).
#[tokio::test]
async fn an_absurd_gws_token_lifetime_is_not_a_panic() {
    use axum::{Router, routing::post};
    let app = Router::new()
        .route(
            "/auth/v3/oauth/token",
            post(|| async { axum::Json(json!({"access_token": "t", "expires_in": u64::MAX})) }),
        )
        .route(
            "/statistics/v3/operations/get-statistic-ex",
            post(|| async { axum::Json(json!({"status": {"code": 0}, "data": {}})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let creds =
        json!({"clientId": "c", "clientSecret": "s", "authUrl": base, "statisticsUrl": base});
    let (code, body) = e
        .admin_put("/ges/v1/tenants/acme/credentials/gws", creds)
        .await;
    assert_eq!(code, 200, "{body}");
    let stats = "/engagement/v3/statistics/operations/get-statistic-ex";
    let (code, body) = e
        .post(&key, stats, json!({"data": {"statistics": []}}))
        .await;
    assert_eq!(code, 200, "{body}");
}

/// A `siteverify` that never answers, with `CAPTCHA_TIMEOUT_MS` longer than the request's
/// deadline: the deadline answers 503, and nothing is stored, then or later (never a silent
/// pass). Kept as a guard (it held).
#[tokio::test]
async fn a_hanging_siteverify_past_the_request_deadline_stores_nothing() {
    let fake = FakeSiteverify::start("s3cret").await;
    let env = TestEnv::new()
        .with("CAPTCHA_VERIFY_URL", &fake.url)
        .with("CAPTCHA_TIMEOUT_MS", "60000")
        .with("REQUEST_TIMEOUT_MS", "1500");
    let fx = Fixture::with(env, &[], "acme", "sales", json!({"captcha_required": true})).await;
    let (code, body) = fx
        .engage
        .admin_put(
            "/ges/v1/tenants/acme/credentials/captcha",
            json!({"secret": "s3cret"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    fake.set_mode(harness::siteverify::Mode::Hang);
    let started = Instant::now();
    let token = fake.issue();
    let (code, body) = fx.create().field("captchaToken", json!(token)).send().await;
    assert_eq!(code, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(3_600),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 0);
}

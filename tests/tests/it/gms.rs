//! The GMS-compatible surface under `/genesys/` (docs/gms.md), over real HTTP on the internal
//! port: the `ContactCenterId` tenant and Basic credentials, create (form and JSON bodies as
//! real clients send them) and cancel through the same domain functions as the v3 API, the
//! GMS error shape whatever layer refuses, and the attackers of each promise.

use std::time::Duration;

use harness::{Engage, Fixture, TestEnv};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

const EXCEPTIONS: &str = "com.genesyslab.gsg.services.callback.exceptions.";

/// A request on the internal port's GMS surface for tenant `ccid` (no header when `None`).
fn gms(e: &Engage, method: Method, path: &str, ccid: Option<&str>) -> RequestBuilder {
    let req = e.http.request(method, format!("{}{path}", e.internal));
    match ccid {
        Some(c) => req.header("ContactCenterId", c),
        None => req,
    }
}

/// A form-urlencoded create of `body` on `service`; (status, body).
async fn form_create(e: &Engage, ccid: &str, service: &str, body: &str) -> (u16, Value) {
    harness::send(
        gms(
            e,
            Method::POST,
            &format!("/genesys/1/service/callback/{service}"),
            Some(ccid),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string()),
    )
    .await
}

/// A JSON create; (status, body).
async fn json_create(e: &Engage, ccid: &str, service: &str, body: Value) -> (u16, Value) {
    harness::send(
        gms(
            e,
            Method::POST,
            &format!("/genesys/1/service/callback/{service}"),
            Some(ccid),
        )
        .json(&body),
    )
    .await
}

/// A GMS cancel; (status, body).
async fn gms_cancel(e: &Engage, ccid: &str, service: &str, id: &str) -> (u16, Value) {
    harness::send(gms(
        e,
        Method::DELETE,
        &format!("/genesys/1/service/callback/{service}/{id}"),
        Some(ccid),
    ))
    .await
}

/// Asserts a GMS-shaped error: status, a message containing `part`, the class ending `class`.
fn assert_gms_error(answer: &(u16, Value), code: u16, class: &str, part: &str) {
    let (got, body) = answer;
    assert_eq!(*got, code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(part), "{part:?} not in {body}");
    assert_eq!(
        body["exception"].as_str().unwrap_or_default(),
        format!("{EXCEPTIONS}{class}"),
        "{body}"
    );
    assert!(body.get("status").is_none(), "not the v3 envelope: {body}");
}

/// The surface is on the internal port only, and every refusal under it, whichever layer
/// writes it (the tenant extractor, the fallback of unknown routes, a wrong method, a
/// malformed path), answers in the GMS shape; the v3 routes keep the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_surface_is_internal_only_and_answers_in_the_gms_shape() {
    let fx = Fixture::start(json!({})).await;
    let e = &fx.engage;
    let path = "/genesys/1/service/callback/sales";
    let external = harness::send(
        e.http
            .post(format!("{}{path}", e.external))
            .body("_customer_number=5551234"),
    )
    .await;
    assert_eq!(external.0, 404, "{}", external.1);
    assert!(harness::message(&external.1).starts_with("no such route"));
    // With the header, the public port refuses it before routing (it never takes a tenant
    // from a header).
    let external = harness::send(
        e.http
            .post(format!("{}{path}", e.external))
            .header("ContactCenterId", "acme")
            .body("_customer_number=5551234"),
    )
    .await;
    assert_eq!(external.0, 400, "{}", external.1);
    let missing = harness::send(gms(e, Method::POST, path, None).body("_customer_number=1")).await;
    assert_gms_error(
        &missing,
        400,
        "CallbackExceptionBadRequest",
        "ContactCenterId",
    );
    let blank = harness::send(gms(e, Method::POST, path, Some("  "))).await;
    assert_gms_error(
        &blank,
        400,
        "CallbackExceptionBadRequest",
        "ContactCenterId",
    );
    let unknown = harness::send(gms(e, Method::POST, path, Some("nobody"))).await;
    assert_gms_error(
        &unknown,
        404,
        "CallbackExceptionNotFound",
        "ContactCenterId",
    );
    let no_route = harness::send(gms(e, Method::GET, "/genesys/9/nothing", Some("acme"))).await;
    assert_gms_error(&no_route, 404, "CallbackExceptionNotFound", "no such route");
    let method = harness::send(gms(e, Method::PATCH, path, Some("acme"))).await;
    assert_gms_error(&method, 405, "CallbackExceptionMethodNotAllowed", "PATCH");
    // The header's name is case-insensitive, its value matched ignoring case.
    let (code, body) = harness::send(
        e.http
            .post(format!("{}{path}", e.internal))
            .header("CONTACTCENTERID", "ACME")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("_customer_number=5551234"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // The v3 API is untouched.
    let (code, body) = e.admin_get("/ges/v1/nothing").await;
    assert_eq!(code, 404);
    assert_eq!(body["status"]["code"], 404, "{body}");
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 1);
}

/// Service settings with every limit out of the way (and capacity for scheduled creates).
fn open() -> Value {
    harness::open_service(json!({"slot_minutes": 15, "slot_capacity": 5}))
}

/// Noon UTC two days ahead (a slot start on the 15-minute grid).
fn noon_in_two_days() -> jiff::Timestamp {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    harness::local(
        "UTC",
        today
            .checked_add(jiff::ToSpan::days(2))
            .expect("date in range"),
        12,
        0,
    )
}

/// The exact bodies of the reference (documented form, Android's keys, QA's JSON) are
/// accepted; the immediate ones reach the voice stream, the scheduled one lands in its slot,
/// and user keys come back as user data through the v3 retrieve and as record keys here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_bodies_create_immediate_and_scheduled_callbacks() {
    let fx = Fixture::dispatch(TestEnv::new(), "acme", "sales", open()).await;
    let e = &fx.engage;
    let _worker = harness::WorkerProc::start(&fx.env, &[]).await;
    // The documented example.
    let doc = form_create(
        e,
        "acme",
        "sales",
        "_customer_number=01822256&my_token=Stat_Server1",
    )
    .await;
    assert_eq!(doc.0, 200, "{}", doc.1);
    assert_eq!(doc.1["_text"], "You will receive the call shortly");
    assert_eq!(doc.1["_customer_number"], "01822256");
    assert_eq!(doc.1["my_token"], "Stat_Server1");
    assert_eq!(doc.1["_callback_state"], "QUEUED");
    assert!(
        doc.1.as_object().unwrap().values().all(Value::is_string),
        "{}",
        doc.1
    );
    // Android's keys (form): state, virtual queue and statistic are accepted and ignored.
    let slot = noon_in_two_days();
    let at = harness::wire(slot + jiff::SignedDuration::from_mins(5));
    let android = form_create(
        e,
        "acme",
        "sales",
        &format!(
            "_customer_number=%2B1%20202%20555%200142&_desired_time={}&_callback_state=SCHEDULED\
             &_urs_virtual_queue=SIP_VQ&_request_queue_time_stat=ExpectedWaitTime\
             &first_name=Ada+L",
            at.replace(':', "%3A")
        ),
    )
    .await;
    assert_eq!(android.0, 200, "{}", android.1);
    assert_eq!(android.1["_callback_state"], "SCHEDULED");
    assert_eq!(android.1["_desired_time"], at);
    assert!(android.1.get("_text").is_none());
    assert!(android.1.get("_urs_virtual_queue").is_none());
    let android_id = android.1["_id"].as_str().unwrap().to_string();
    let booked: Option<jiff::Timestamp> = fx
        .env
        .pg()
        .await
        .query_one(
            "SELECT slot_start FROM callbacks WHERE id = $1::text::uuid",
            &[&android_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(booked, Some(slot), "the scheduled create holds its slot");
    // QA's JSON: numbers and booleans stringified, custom keys kept.
    let qa = json_create(
        e,
        "acme",
        "sales",
        json!({"_customer_number": 5115, "_callback_state": "QUEUED", "_service_name": "sales",
               "_customer_id": "c-7", "CB_SUBSCRIPTION_ID": 42, "GCS_TransferringNotepad": true}),
    )
    .await;
    assert_eq!(qa.0, 200, "{}", qa.1);
    assert_eq!(qa.1["_customer_number"], "5115");
    assert_eq!(qa.1["CB_SUBSCRIPTION_ID"], "42");
    let qa_id = qa.1["_id"].as_str().unwrap().to_string();
    let v3 = fx.retrieve(&qa_id).await;
    assert_eq!(v3["userData"]["CB_SUBSCRIPTION_ID"], "42", "{v3}");
    assert_eq!(v3["userData"]["GCS_TransferringNotepad"], "true");
    assert_eq!(v3["userData"]["_customer_id"], "c-7");
    assert!(v3["userData"].get("_callback_state").is_none(), "{v3}");
    let doc_id = doc.1["_id"].as_str().unwrap().to_string();
    assert_eq!(
        fx.retrieve(&doc_id).await["userData"]["my_token"],
        "Stat_Server1"
    );
    // Both immediate callbacks reach the voice stream, the scheduled one does not (yet).
    fx.env.wait_handoffs(2, Duration::from_secs(20)).await;
    let handed = fx.env.ids_in(fx.env.voice_stream()).await;
    assert!(
        handed.contains(&doc_id) && handed.contains(&qa_id),
        "{handed:?}"
    );
    assert!(!handed.contains(&android_id));
}

/// The create-time limits answer 503 with GMS's exact messages; a refused create stores
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_503_with_the_exact_gms_messages() {
    let base = harness::open_service(json!({}));
    let with = |extra: Value| {
        let mut s = base.clone();
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s
    };
    let fx = Fixture::with(
        TestEnv::new(),
        &[],
        "acme",
        "capped",
        with(json!({"max_queued": 1})),
    )
    .await;
    let e = &fx.engage;
    e.service(
        "acme",
        "rated",
        with(json!({"throttle_per_service_1": 1, "throttle_ttl_1": 300})),
    )
    .await;
    e.service("acme", "daily", with(json!({"throttle_per_number_24h": 1})))
        .await;
    e.service("acme", "inq", with(json!({"in_queue_checking": "strict"})))
        .await;
    let svc = "ServiceUnavailable";
    let class = format!("CallbackException{svc}");
    assert_eq!(
        form_create(e, "acme", "capped", "_customer_number=5550001")
            .await
            .0,
        200
    );
    let r = form_create(e, "acme", "capped", "_customer_number=5550002").await;
    assert_gms_error(&r, 503, &class, "");
    assert_eq!(
        r.1["message"],
        "Limit of queued callbacks for capped is reached."
    );
    assert_eq!(
        form_create(e, "acme", "rated", "_customer_number=5550003")
            .await
            .0,
        200
    );
    let r = form_create(e, "acme", "rated", "_customer_number=5550004").await;
    assert_gms_error(&r, 503, &class, "");
    assert_eq!(
        r.1["message"],
        "Limit of queued callbacks for rated is reached for interval 300s."
    );
    assert_eq!(
        form_create(e, "acme", "daily", "_customer_number=5550005")
            .await
            .0,
        200
    );
    let r = form_create(e, "acme", "daily", "_customer_number=5550005").await;
    assert_gms_error(&r, 503, &class, "");
    assert_eq!(
        r.1["message"],
        "Callback for _customer_number=5550005 rejected because previous callbacks for this \
         parameter were requested for more than 1 times today."
    );
    assert_eq!(
        form_create(e, "acme", "inq", "_customer_number=5550006")
            .await
            .0,
        200
    );
    let r = form_create(e, "acme", "inq", "_customer_number=5550006").await;
    assert_gms_error(&r, 503, &class, "_customer_number=5550006");
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 4);
}

/// Per-tenant Basic credentials: off by default, required once set (absent, wrong user,
/// wrong password, garbage → 401 with the challenge), off again once removed; the password is
/// stored hashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_on_off_and_wrong() {
    let fx = Fixture::start(json!({})).await;
    let e = &fx.engage;
    let path = "/genesys/1/service/callback/sales";
    let post = |auth: Option<(&str, &str)>| {
        let req = gms(e, Method::POST, path, Some("acme"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "_customer_number={}",
                harness::next_phone().replace('+', "%2B")
            ));
        match auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    };
    assert_eq!(
        harness::send(post(None)).await.0,
        200,
        "no credentials configured"
    );
    let creds = "/ges/v1/tenants/acme/gms-credentials";
    let (code, body) = e
        .admin_put(
            creds,
            json!({"username": "designer", "password": "s3cret pass"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(!body.to_string().contains("s3cret"), "{body}");
    let stored: String = fx
        .env
        .pg()
        .await
        .query_one("SELECT password_hash FROM gms_credentials", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("$argon2id$") && !stored.contains("s3cret"));
    for (auth, what) in [
        (None, "absent"),
        (Some(("designer", "wrong")), "wrong password"),
        (Some(("Designer", "s3cret pass")), "wrong user"),
    ] {
        let resp = post(auth).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{what}");
        assert_eq!(
            resp.headers()["www-authenticate"].to_str().unwrap(),
            "Basic realm=\"genesys\""
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["exception"],
            format!("{EXCEPTIONS}CallbackExceptionUnauthorized")
        );
    }
    let garbage = post(None)
        .header("authorization", "Basic !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 401);
    // Right credentials, twice (the second from the cache).
    for _ in 0..2 {
        let (code, body) = harness::send(post(Some(("designer", "s3cret pass")))).await;
        assert_eq!(code, 200, "{body}");
    }
    // Bad admin bodies are refused.
    for bad in [
        json!({"username": "a:b", "password": "x"}),
        json!({"username": "a", "password": ""}),
        json!({"username": "a"}),
    ] {
        assert_eq!(e.admin_put(creds, bad).await.0, 400);
    }
    assert_eq!(
        e.admin_put(
            "/ges/v1/tenants/nobody/gms-credentials",
            json!({"username": "a", "password": "b"})
        )
        .await
        .0,
        404
    );
    assert_eq!(e.admin_delete(creds).await.0, 200);
    assert_eq!(
        harness::send(post(None)).await.0,
        200,
        "credentials removed"
    );
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 4);
}

/// One callback across both surfaces: GMS create → v3 retrieve → GMS cancel → v3 retrieve
/// shows the cancel; a v3 create is cancelled through GMS; another tenant's or another
/// service's id is 404 and cancels nothing; a second cancel is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_cancel_cross_the_two_surfaces() {
    let fx = Fixture::start(open()).await;
    let e = &fx.engage;
    e.service("acme", "other", open()).await;
    let _other_key = e.provision("globex", "sales", open()).await;
    let (code, created) = form_create(e, "acme", "sales", "_customer_number=5550100").await;
    assert_eq!(code, 200, "{created}");
    let id = created["_id"].as_str().unwrap().to_string();
    assert_eq!(fx.retrieve(&id).await["callbackState"], "QUEUED");
    // Another tenant, another service, garbage ids: 404, nothing cancelled.
    assert_gms_error(
        &gms_cancel(e, "globex", "sales", &id).await,
        404,
        "CallbackExceptionNotFound",
        "",
    );
    assert_gms_error(
        &gms_cancel(e, "acme", "other", &id).await,
        404,
        "CallbackExceptionNotFound",
        "",
    );
    assert_gms_error(
        &gms_cancel(e, "acme", "nosuch", &id).await,
        404,
        "CallbackExceptionNotFound",
        "",
    );
    assert_gms_error(
        &gms_cancel(e, "acme", "sales", "not-an-id").await,
        404,
        "CallbackExceptionNotFound",
        "",
    );
    assert_eq!(fx.retrieve(&id).await["callbackState"], "QUEUED");
    let bad_flag = harness::send(gms(
        e,
        Method::DELETE,
        &format!("/genesys/1/service/callback/sales/{id}?discard_ors_failure=maybe"),
        Some("acme"),
    ))
    .await;
    assert_gms_error(
        &bad_flag,
        400,
        "CallbackExceptionBadRequest",
        "discard_ors_failure",
    );
    let (code, body) = harness::send(gms(
        e,
        Method::DELETE,
        &format!("/genesys/1/service/callback/sales/{id}?discard_ors_failure=true"),
        Some("acme"),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    let v3 = fx.retrieve(&id).await;
    assert_eq!(
        (v3["callbackState"].as_str(), v3["callbackReason"].as_str()),
        (Some("COMPLETED"), Some("CANCELLED"))
    );
    // Cancelling a COMPLETED callback: 400 naming its state.
    assert_gms_error(
        &gms_cancel(e, "acme", "sales", &id).await,
        400,
        "CallbackExceptionBadRequest",
        "completed",
    );
    // v3 create → GMS cancel.
    let v3_id = fx.create().in_secs(3600).id().await;
    assert_eq!(gms_cancel(e, "acme", "sales", &v3_id).await.0, 200);
    assert_eq!(fx.retrieve(&v3_id).await["callbackReason"], "CANCELLED");
    assert_eq!(
        fx.env
            .count("SELECT count(*) FROM callbacks WHERE state = 'COMPLETED'")
            .await,
        2
    );
}

/// Bad bodies are 400 (415, 413) in the GMS shape and store nothing: malformed escapes,
/// non-UTF-8, duplicate keys (form and JSON), empty keys, NUL, JSON arrays and nesting,
/// trailing garbage, oversized bodies, no `_customer_number`, an unknown service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attackers_bodies_are_refused_and_store_nothing() {
    let fx = Fixture::start(open()).await;
    let e = &fx.engage;
    let form = "application/x-www-form-urlencoded";
    let json = "application/json";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (form, b"_customer_number=%zz1".to_vec(), 400, "hexadecimal"),
        (form, b"_customer_number=%4".to_vec(), 400, "hexadecimal"),
        (form, b"_customer_number=555%FF1234".to_vec(), 400, "UTF-8"),
        (form, b"_customer_number=555\xff1234".to_vec(), 400, "UTF-8"),
        (
            form,
            b"_customer_number=5551234&_customer_number=5559999".to_vec(),
            400,
            "more than once",
        ),
        (
            form,
            b"_customer_number=5551234&=x".to_vec(),
            400,
            "empty key",
        ),
        (form, b"_customer_number=5551234&a=%00".to_vec(), 400, "NUL"),
        (form, b"my_token=x".to_vec(), 400, "_customer_number"),
        (
            json,
            br#"[{"_customer_number":"5551234"}]"#.to_vec(),
            400,
            "object",
        ),
        (
            json,
            br#"{"_customer_number":"5551234","a":{"b":1}}"#.to_vec(),
            400,
            "array or object",
        ),
        (
            json,
            br#"{"_customer_number":["5551234"]}"#.to_vec(),
            400,
            "array or object",
        ),
        (
            json,
            br#"{"_customer_number":"1","_customer_number":"5551234"}"#.to_vec(),
            400,
            "more than once",
        ),
        (
            json,
            br#"{"_customer_number":"5551234"} {}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            json,
            br#"{"_customer_number":"5551234""#.to_vec(),
            400,
            "malformed",
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x--".to_vec(),
            415,
            "content type",
        ),
    ];
    for (kind, body, code, part) in cases {
        let answer = harness::send(
            gms(
                e,
                Method::POST,
                "/genesys/1/service/callback/sales",
                Some("acme"),
            )
            .header("content-type", kind)
            .body(body.clone()),
        )
        .await;
        assert_eq!(
            answer.0,
            code,
            "{:?}: {}",
            String::from_utf8_lossy(&body),
            answer.1
        );
        assert!(
            answer.1["message"]
                .as_str()
                .unwrap_or_default()
                .contains(part),
            "{part:?} in {}",
            answer.1
        );
        assert!(
            answer.1["exception"]
                .as_str()
                .unwrap()
                .starts_with(EXCEPTIONS)
        );
    }
    let huge = format!("_customer_number=5551234&x={}", "a".repeat(70 * 1024));
    let r = form_create(e, "acme", "sales", &huge).await;
    assert_gms_error(&r, 413, "CallbackExceptionPayloadTooLarge", "bytes");
    // Over the internal port's own limit: refused by the stack, still in the GMS shape.
    let giant = format!(
        "_customer_number=5551234&x={}",
        "a".repeat(11 * 1024 * 1024)
    );
    let r = form_create(e, "acme", "sales", &giant).await;
    assert_gms_error(&r, 413, "CallbackExceptionPayloadTooLarge", "");
    let r = form_create(e, "acme", "nosuch", "_customer_number=5551234").await;
    assert_gms_error(&r, 404, "CallbackExceptionNotFound", "nosuch");
    let past = form_create(
        e,
        "acme",
        "sales",
        "_customer_number=5551234&_desired_time=2013-05-28T15:30:00.000Z",
    )
    .await;
    assert_gms_error(&past, 400, "CallbackExceptionBadRequest", "_desired_time");
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 0);
}

/// A full slot answers 400 with `availability` (slot → places left), nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_slot_answers_with_availability() {
    let fx = Fixture::start(harness::open_service(
        json!({"slot_minutes": 15, "slot_capacity": 1}),
    ))
    .await;
    let e = &fx.engage;
    let at = harness::wire(noon_in_two_days());
    let body = format!("_customer_number=5550200&_desired_time={at}");
    assert_eq!(form_create(e, "acme", "sales", &body).await.0, 200);
    let body = format!("_customer_number=5550201&_desired_time={at}");
    let r = form_create(e, "acme", "sales", &body).await;
    assert_gms_error(&r, 400, "CallbackExceptionDesiredTimeUnavailable", "");
    let slots = r.1["availability"].as_object().expect("availability");
    assert!(!slots.is_empty() && !slots.contains_key(&at), "{slots:?}");
    assert!(
        slots.values().all(Value::is_i64),
        "places are numbers: {slots:?}"
    );
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 1);
}

/// GMS cancels raced against the worker's hand-offs settle with the voice platform as v3
/// cancels do: every cancelled callback that reached the voice stream gets a control entry,
/// the others never reach it, and nothing stays owed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_raced_against_hand_off_settle_with_the_voice_platform() {
    let fx = Fixture::dispatch(TestEnv::new(), "acme", "sales", open()).await;
    let e = &fx.engage;
    let _worker = harness::WorkerProc::start(&fx.env, &[]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (code, body) =
            form_create(e, "acme", "sales", &format!("_customer_number=55503{i:02}")).await;
        assert_eq!(code, 200, "{body}");
        ids.push(body["_id"].as_str().unwrap().to_string());
    }
    // Concurrent cancels while the worker hands off, more than the pool has connections: each
    // request holds at most one (the cancel's follow-ups take theirs after it is returned), so
    // every one is answered 200, none starves the pool into a 503.
    let cancel = |id: String| async move { gms_cancel(e, "acme", "sales", &id).await };
    let cancels = ids.iter().cloned().map(cancel);
    for (code, body) in futures::future::join_all(cancels).await {
        assert_eq!(code, 200, "{body}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let owed = fx
            .env
            .count("SELECT count(*) FROM callbacks WHERE control_pending")
            .await;
        let handed = fx.env.ids_in(fx.env.voice_stream()).await;
        let controls = fx.env.ids_in(fx.env.control_stream()).await;
        let unsettled: Vec<_> = handed.iter().filter(|id| !controls.contains(id)).collect();
        if owed == 0 && unsettled.is_empty() {
            println!(
                "FIGURE gms_race_handed_off={} of {}",
                handed.len(),
                ids.len()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "owed {owed}, handed off without a control entry: {unsettled:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Fenced hand-offs stay fenced.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let handed = fx.env.ids_in(fx.env.voice_stream()).await;
    let controls = fx.env.ids_in(fx.env.control_stream()).await;
    assert!(
        handed.iter().all(|id| controls.contains(id)),
        "{handed:?} {controls:?}"
    );
    assert_eq!(
        fx.env
            .count("SELECT count(*) FROM callbacks WHERE reason = 'CANCELLED'")
            .await,
        20
    );
}

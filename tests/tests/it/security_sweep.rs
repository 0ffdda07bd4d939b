//! Security sweep (issue 14): every route of `engage serve` (`routes`, kept equal to the code
//! by a tidy check) on both ports, attacked with missing, unknown, revoked and wrong-kind
//! credentials and with another tenant's key; internal routes absent from the external port;
//! API keys stored only hashed; rate-limited answers in the envelope; malformed HTTP over raw
//! TCP (`malformed`); the same refusals on each per-endpoint function binary. Every answer is
//! checked to be in the envelope and never a 5xx, every request is bounded in time, and
//! nothing may change in PostgreSQL or Redis.

mod malformed;
mod routes;

use std::{collections::BTreeMap, time::Duration};

use harness::{ADMIN_TOKEN, Engage, ORS_EVENTS_TOKEN, TestEnv, open_service};
use rand::{Rng, distr::Alphanumeric};
use reqwest::Method;
use routes::{Auth, Port, Route};
use serde_json::{Value, json};

const VICTIM: &str = "victim";
const INTRUDER: &str = "intruder";
/// A service both tenants have.
const SHARED: &str = "sales";
/// A service only the victim has.
const OWN: &str = "vonly";
/// The one origin the victim's CORS allows.
const ORIGIN: &str = "https://app.victim.example";
/// The victim's GMS Basic credentials.
const GMS_USER: &str = "designer";
const GMS_PASSWORD: &str = "sweep-gms-password";

/// One `engage serve`, two tenants, and the victim's objects the routes are aimed at.
struct Sweep {
    env: TestEnv,
    e: Engage,
    http: reqwest::Client,
    victim: String,
    intruder: String,
    revoked: String,
    key_id: String,
    callback: String,
    /// `Cookie` header of a victim Administrator's admin-UI session.
    session: String,
}

/// A body sent with a request: the one the route accepts, or broken JSON.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Body {
    Valid,
    Broken,
}

impl Sweep {
    async fn start(env: TestEnv) -> Self {
        // The auth-failure limiter (issue 14, abuse) would turn repeated 401s into 429s.
        let env = env.with("AUTH_FAILURE_LIMIT", "0");
        let e = Engage::start(&env, &[]).await;
        let victim = e.tenant(VICTIM).await;
        let intruder = e.tenant(INTRUDER).await;
        for (tenant, service) in [(VICTIM, SHARED), (VICTIM, OWN), (INTRUDER, SHARED)] {
            e.service(tenant, service, open_service(json!({}))).await;
        }
        let cors = format!("/ges/v1/tenants/{VICTIM}/cors");
        let (code, body) = e
            .admin_put(&cors, json!({"allowed_origins": [ORIGIN]}))
            .await;
        assert_eq!(code, 200, "cors: {body}");
        let gms = format!("/ges/v1/tenants/{VICTIM}/gms-credentials");
        let login = json!({"username": GMS_USER, "password": GMS_PASSWORD});
        let (code, body) = e.admin_put(&gms, login).await;
        assert_eq!(code, 200, "gms credentials: {body}");
        // A key used (so cached, with and without an Origin) and then revoked.
        let (revoked, revoked_id) = new_key(&e, "revoked").await;
        let path = "/engagement/v3/callbacks/queue-status/sales";
        assert_eq!(e.get(&revoked, path).await.0, 200);
        let with_origin = e.http.get(format!("{}{path}", e.external));
        let with_origin = with_origin
            .header("x-api-key", &revoked)
            .header("origin", ORIGIN);
        assert_eq!(harness::send(with_origin).await.0, 200);
        let (code, body) = e
            .admin_delete(&format!("/ges/v1/tenants/{VICTIM}/api-keys/{revoked_id}"))
            .await;
        assert_eq!(code, 200, "revoke: {body}");
        let (_, key_id) = new_key(&e, "spare").await;
        let callback = e
            .create(&victim)
            .service(SHARED)
            .phone(&harness::next_phone())
            .in_secs(3600)
            .id()
            .await;
        let user =
            json!({"username": "sweeper", "password": GMS_PASSWORD, "role": "Administrator"});
        let (code, body) = e
            .admin_post(&format!("/ges/v1/tenants/{VICTIM}/users"), user)
            .await;
        assert_eq!(code, 200, "ui user: {body}");
        let session = harness::ui::ui_login(&e, VICTIM, "sweeper", GMS_PASSWORD)
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Self {
            env,
            e,
            http,
            victim,
            intruder,
            revoked,
            key_id,
            callback,
            session,
        }
    }

    /// The route's path aimed at the victim's objects, with the query it needs.
    fn url(&self, base: &str, route: &Route) -> String {
        let path = route
            .path
            .replace("{ccid}", VICTIM)
            .replace("{service}", OWN)
            .replace("{queue}", OWN)
            .replace("{name}", SHARED)
            .replace("{key_id}", &self.key_id)
            .replace("{kind}", "captcha")
            .replace("{id}", &self.callback);
        let query = match route.path {
            "/engagement/v3/estimated-wait-time" => "?mode=mode1&virtual-queues=vonly",
            _ => "",
        };
        format!("{base}{path}{query}")
    }

    /// A body the route would act on (so that a missing check would change something).
    fn body(&self, route: &Route) -> Option<Value> {
        let body = match (route.method, route.path) {
            ("GET" | "DELETE", _) => return None,
            (_, "/engagement/v3/callbacks/create") => {
                json!({"serviceName": SHARED, "phoneNumber": harness::next_phone()})
            }
            (_, "/engagement/v3/callbacks/retrieve" | "/engagement/v3/callbacks/cancel") => {
                json!({"id": self.callback})
            }
            (_, "/ges/v1/tenants") => json!({"id": "sneaky", "name": "sneaky"}),
            (_, "/ges/v1/tenants/{ccid}/cors") => {
                json!({"allowed_origins": ["https://evil.example"]})
            }
            (_, "/ges/v1/tenants/{ccid}/api-keys") => json!({"label": "sneaky"}),
            (_, "/ges/v1/tenants/{ccid}/credentials/{kind}") => json!({"secret": "sneaky"}),
            (_, "/ges/v1/ors/callbacks/{id}/events") => {
                json!({"state": "COMPLETED", "reason": "AGENT_CONNECTED"})
            }
            (_, "/ges/v1/tenants/{ccid}/services/{name}") => open_service(json!({})),
            (_, "/genesys/1/service/callback/{service}") => {
                json!({"_customer_number": harness::next_phone()})
            }
            _ => json!({}),
        };
        Some(body)
    }

    /// Sends `route` to `base` with `headers` and a body; (status, JSON body or Null).
    async fn call(
        &self,
        base: &str,
        route: &Route,
        headers: &[(&str, String)],
        body: Body,
    ) -> (u16, Value) {
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(base, route));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        match (self.body(route), body) {
            (Some(b), Body::Valid) => req = req.json(&b),
            (Some(_), Body::Broken) => {
                req = req
                    .header("content-type", "application/json")
                    .body(r#"{"id": "#)
            }
            (None, _) => {}
        }
        harness::send(req).await
    }

    /// The ports a route is served on.
    fn bases(&self, route: &Route) -> Vec<&str> {
        match route.port {
            Port::Both => vec![&self.e.external, &self.e.internal],
            Port::Internal => vec![&self.e.internal],
        }
    }

    /// Credentials that must not pass a route of `auth`, each with what it is.
    fn bad_credentials(&self, auth: Auth) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
        let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
        let key = |k: &str| vec![("x-api-key", k.to_string())];
        match auth {
            Auth::Open => vec![],
            Auth::ApiKey => vec![
                ("no credentials", vec![]),
                ("an unknown key", key(&random_key())),
                ("a revoked key", key(&self.revoked)),
                (
                    "a revoked key from an allowed origin",
                    vec![
                        ("x-api-key", self.revoked.clone()),
                        ("origin", ORIGIN.to_string()),
                    ],
                ),
                ("the key in upper case", key(&self.victim.to_uppercase())),
                (
                    "the key without its prefix",
                    key(self.victim.trim_start_matches("egk_")),
                ),
                ("a blank key", key("   ")),
                ("a 300-character key", key(&"k".repeat(300))),
                ("the admin token", bearer(ADMIN_TOKEN)),
                ("the events token", bearer(ORS_EVENTS_TOKEN)),
                ("the key as a bearer", bearer(&self.victim)),
            ],
            Auth::Admin => vec![
                ("no credentials", vec![]),
                ("a wrong admin token", bearer(&random_like(ADMIN_TOKEN))),
                (
                    "the admin token plus a character",
                    bearer(&format!("{ADMIN_TOKEN}x")),
                ),
                ("a prefix of the admin token", bearer(&ADMIN_TOKEN[..16])),
                ("an empty bearer", bearer("")),
                (
                    "the admin token as Basic",
                    vec![("authorization", format!("Basic {ADMIN_TOKEN}"))],
                ),
                ("the events token", bearer(ORS_EVENTS_TOKEN)),
                ("an API key", key(&self.victim)),
                ("an API key as a bearer", bearer(&self.victim)),
            ],
            Auth::Ors => vec![
                ("no credentials", vec![]),
                (
                    "a wrong events token",
                    bearer(&random_like(ORS_EVENTS_TOKEN)),
                ),
                ("the admin token", bearer(ADMIN_TOKEN)),
                ("an API key", key(&self.victim)),
                (
                    "the events token as Basic",
                    vec![("authorization", format!("Basic {ORS_EVENTS_TOKEN}"))],
                ),
            ],
            Auth::Session => {
                let cookie = |c: String| vec![("cookie", c)];
                vec![
                    ("no credentials", vec![]),
                    (
                        "a forged session",
                        cookie(format!("ges_session={}", random_key())),
                    ),
                    (
                        "the session with a character more",
                        cookie(format!("{}x", self.session)),
                    ),
                    ("an empty session", cookie("ges_session=".into())),
                    ("the admin token", bearer(ADMIN_TOKEN)),
                    ("an API key", key(&self.victim)),
                ]
            }
            Auth::Gms => {
                let ccid = || ("contactcenterid", VICTIM.to_string());
                let with = |name: &'static str, value: String| vec![ccid(), (name, value)];
                vec![
                    ("ContactCenterId without Basic", vec![ccid()]),
                    (
                        "a wrong Basic password",
                        with("authorization", basic(GMS_USER, "wrong")),
                    ),
                    (
                        "the password under another user",
                        with("authorization", basic("Designer", GMS_PASSWORD)),
                    ),
                    (
                        "the password plus a character",
                        with(
                            "authorization",
                            basic(GMS_USER, &format!("{GMS_PASSWORD}x")),
                        ),
                    ),
                    ("garbage Basic", with("authorization", "Basic !!!".into())),
                    (
                        "the admin token",
                        with("authorization", format!("Bearer {ADMIN_TOKEN}")),
                    ),
                    (
                        "the password as a bearer",
                        with("authorization", format!("Bearer {GMS_PASSWORD}")),
                    ),
                    ("an API key", with("x-api-key", self.victim.clone())),
                ]
            }
        }
    }

    /// The credentials a route accepts.
    fn good_credentials(&self, auth: Auth) -> Vec<(&'static str, String)> {
        match auth {
            Auth::Open => vec![],
            Auth::ApiKey => vec![("x-api-key", self.victim.clone())],
            Auth::Admin => vec![("authorization", format!("Bearer {ADMIN_TOKEN}"))],
            Auth::Ors => vec![("authorization", format!("Bearer {ORS_EVENTS_TOKEN}"))],
            Auth::Gms => vec![
                ("contactcenterid", VICTIM.to_string()),
                ("authorization", basic(GMS_USER, GMS_PASSWORD)),
            ],
            Auth::Session => vec![("cookie", self.session.clone())],
        }
    }
}

/// An `Authorization: Basic` value.
fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Creates a key of the victim through the admin API: (key, id).
async fn new_key(e: &Engage, label: &str) -> (String, String) {
    let (code, body) = e
        .admin_post(
            &format!("/ges/v1/tenants/{VICTIM}/api-keys"),
            json!({"label": label}),
        )
        .await;
    assert_eq!(code, 201, "key create: {body}");
    let data = &body["data"];
    (
        data["key"].as_str().unwrap().to_string(),
        data["id"].as_str().unwrap().to_string(),
    )
}

fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A key of the generated shape that no tenant has.
fn random_key() -> String {
    format!("egk_{}", random_alnum(40))
}

/// A token of the same length as `real` but different.
fn random_like(real: &str) -> String {
    random_alnum(real.len())
}

/// Asserts an answer is in the envelope with its own status, and not a 5xx (under
/// `/genesys/`, GMS's `{message, exception}` shape instead: docs/gms.md#errors).
#[track_caller]
fn assert_envelope(code: u16, body: &Value, what: &str) {
    assert!(code < 500, "{what}: {code} {body}");
    if body.get("exception").is_some() {
        assert!(what.contains("/genesys/"), "{what}: GMS shape: {body}");
        let class = body["exception"].as_str().unwrap_or_default();
        assert!(
            class.starts_with("com.genesyslab.gsg.services.callback.exceptions."),
            "{what}: {body}"
        );
        assert!(
            !body["message"].as_str().unwrap_or_default().is_empty(),
            "{what}: no message: {body}"
        );
        return;
    }
    assert_eq!(
        body["status"]["code"], code,
        "{what}: not in the envelope: {body}"
    );
    assert!(
        body["status"]["corrId"].is_string(),
        "{what}: no corrId: {body}"
    );
    assert!(
        !harness::message(body).is_empty(),
        "{what}: no message: {body}"
    );
}

/// Whether an envelope is the router's answer for a path it does not have.
fn is_unknown_route(code: u16, body: &Value) -> bool {
    // Under `/genesys/` the internal ports answer in GMS's shape (docs/gms.md#errors).
    let gms = body["message"].as_str().unwrap_or("");
    code == 404
        && (harness::message(body).starts_with("no such route") || gms.starts_with("no such route"))
}

/// Every table of the environment's schema, as (row count, digest of all rows), and the names
/// of the environment's Redis keys; `skip` names tables left out.
async fn snapshot(env: &TestEnv, skip: &[&str]) -> (BTreeMap<String, (i64, String)>, Vec<String>) {
    let pg = env.pg().await;
    let mut tables = BTreeMap::new();
    for table in tables_of(env).await {
        if skip.contains(&table.as_str()) {
            continue;
        }
        let row = pg
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')
                     FROM \"{}\".\"{table}\" t",
                    env.id
                ),
                &[],
            )
            .await
            .unwrap();
        tables.insert(table, (row.get(0), row.get(1)));
    }
    let mut keys = redis_keys(env).await;
    keys.sort();
    (tables, keys)
}

/// The base tables of the environment's schema.
async fn tables_of(env: &TestEnv) -> Vec<String> {
    env.pg()
        .await
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
            &[&env.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every key of the service Redis that belongs to this environment.
async fn redis_keys(env: &TestEnv) -> Vec<String> {
    let mut conn = env.redis().await;
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{}*", env.id))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.extend(keys);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_missing_wrong_and_revoked_credentials() {
    let s = Sweep::start(TestEnv::new()).await;
    let before = snapshot(&s.env, &[]).await;
    let mut refused = 0;
    for route in routes::all() {
        for base in s.bases(&route) {
            for (what, headers) in s.bad_credentials(route.auth) {
                for body in [Body::Valid, Body::Broken] {
                    if body == Body::Broken && s.body(&route).is_none() {
                        continue;
                    }
                    let (code, answer) = s.call(base, &route, &headers, body).await;
                    let ctx = format!(
                        "{} {} on {base} with {what}, {body:?} body",
                        route.method, route.path
                    );
                    assert_eq!(code, 401, "{ctx}: {answer}");
                    assert_envelope(code, &answer, &ctx);
                    refused += 1;
                }
            }
        }
    }
    assert!(
        refused > 500,
        "only {refused} refusals: the route list is too short"
    );
    println!(
        "{} routes, {refused} refused requests checked",
        routes::all().len()
    );
    assert_eq!(
        snapshot(&s.env, &[]).await,
        before,
        "a refused request changed state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_routes_are_absent_from_the_external_port_and_every_listed_route_is_served() {
    let s = Sweep::start(TestEnv::new()).await;
    for route in routes::all().iter().filter(|r| r.port == Port::Internal) {
        let mut tries = s.bad_credentials(route.auth);
        tries.push(("its own credentials", s.good_credentials(route.auth)));
        for (what, headers) in tries {
            let (code, answer) = s.call(&s.e.external, route, &headers, Body::Valid).await;
            let ctx = format!(
                "{} {} on the external port with {what}",
                route.method, route.path
            );
            assert_envelope(code, &answer, &ctx);
            // A ContactCenterId header is refused before routing, whatever the path.
            let ccid_refused = route.auth == Auth::Gms
                && code == 400
                && harness::message(&answer).contains("ContactCenterID headers are not accepted");
            assert!(
                is_unknown_route(code, &answer) || ccid_refused,
                "{ctx}: {code} {answer}"
            );
        }
    }
    // With its own credentials, each listed route is served on each port the list names.
    for route in routes::all() {
        for base in s.bases(&route) {
            let headers = s.good_credentials(route.auth);
            let (code, answer) = s.call(base, &route, &headers, Body::Valid).await;
            let ctx = format!(
                "{} {} on {base} with its credentials",
                route.method, route.path
            );
            assert!(code < 500, "{ctx}: {code} {answer}");
            assert!(
                !is_unknown_route(code, &answer),
                "{ctx}: not routed: {answer}"
            );
            if code >= 400 {
                assert_envelope(code, &answer, &ctx);
            }
        }
    }
}

/// Every listed path once, with the methods it is routed for and where it is served.
fn paths() -> BTreeMap<&'static str, (Vec<&'static str>, Route)> {
    let mut out: BTreeMap<&'static str, (Vec<&'static str>, Route)> = BTreeMap::new();
    for route in routes::all() {
        let entry = out.entry(route.path).or_insert((Vec::new(), route));
        entry.0.push(route.method);
        if route.port == Port::Both {
            entry.1.port = Port::Both;
        }
    }
    out
}

/// One request of `method` without credentials: (status, body).
async fn bare(s: &Sweep, method: &str, url: String, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = s
        .http
        .request(Method::from_bytes(method.as_bytes()).unwrap(), url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    harness::send(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_neither_pass_nor_reveal_internal_routes() {
    let s = Sweep::start(TestEnv::new()).await;
    let before = snapshot(&s.env, &[]).await;
    for (_, (methods, route)) in paths() {
        for method in [
            "HEAD", "OPTIONS", "PATCH", "TRACE", "FOO", "GET", "POST", "PUT", "DELETE",
        ] {
            if methods.contains(&method) {
                continue;
            }
            for base in [s.e.external.as_str(), s.e.internal.as_str()] {
                let served = base == s.e.internal || route.port == Port::Both;
                let (code, body) = bare(&s, method, s.url(base, &route), &[]).await;
                let ctx = format!("{method} {} on {base}", route.path);
                let expected = match (served, method) {
                    (false, _) => 404,
                    // Without ContactCenterId: 400 (docs/gms.md#addressing-and-tenants).
                    (true, "HEAD") if methods.contains(&"GET") && route.auth == Auth::Gms => 400,
                    (true, "HEAD") if methods.contains(&"GET") && route.auth != Auth::Open => 401,
                    (true, "HEAD") if methods.contains(&"GET") => 200,
                    (true, _) => 405,
                };
                assert_eq!(code, expected, "{ctx}: {body}");
                if method != "HEAD" && code >= 400 {
                    assert_envelope(code, &body, &ctx);
                }
            }
        }
    }
    preflights_reveal_nothing(&s).await;
    assert_eq!(
        snapshot(&s.env, &[]).await,
        before,
        "a refused request changed state"
    );
}

/// A CORS preflight (no key) to any path of the external port answers as for a path that
/// does not exist: internal routes are not revealed by it either.
async fn preflights_reveal_nothing(s: &Sweep) {
    let from_evil = s
        .http
        .get(format!(
            "{}/engagement/v3/callbacks/queue-status/{SHARED}",
            s.e.external
        ))
        .header("x-api-key", &s.victim)
        .header("origin", "https://evil.example");
    let (code, body) = harness::send(from_evil).await;
    assert_eq!(code, 403, "{body}");
    assert_envelope(
        code,
        &body,
        "a request from an origin the tenant does not allow",
    );
    let ask = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-api-key"),
        ]
    };
    for origin in [ORIGIN, "https://evil.example"] {
        let nothing = bare(
            s,
            "OPTIONS",
            format!("{}/nothing/here", s.e.external),
            &ask(origin),
        )
        .await;
        if nothing.0 >= 400 {
            assert_envelope(nothing.0, &nothing.1, &format!("a preflight from {origin}"));
        }
        for (path, (_, route)) in paths() {
            let url = s.url(&s.e.external, &route);
            let answer = bare(s, "OPTIONS", url, &ask(origin)).await;
            let strip = |(code, body): (u16, Value)| (code, strip_corr_id(&body.to_string()));
            assert_eq!(
                strip(answer),
                strip(nothing.clone()),
                "a preflight from {origin} to {path} differs from one to a missing path"
            );
        }
    }
}

/// The intruder's answer for `path` (with `{}` replaced by `victims` and, for comparison, by
/// a name nothing has): both must be the same refusal, names aside.
async fn same_as_nothing(s: &Sweep, method: &str, path: &str, body: Option<&str>, victims: &str) {
    let nothing = format!("nothing-{}", random_alnum(8).to_lowercase());
    let mut answers = Vec::new();
    for name in [victims, nothing.as_str()] {
        let url = format!("{}{}", s.e.external, path.replace("{}", name));
        let mut req = s
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url)
            .header("x-api-key", &s.intruder);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.replace("{}", name));
        }
        let (code, answer) = harness::send(req).await;
        let ctx = format!("intruder {method} {path} on {name}");
        assert!(
            code >= 400,
            "{ctx}: another tenant's data answered: {answer}"
        );
        assert_envelope(code, &answer, &ctx);
        answers.push((code, harness::message(&answer).replace(name, "<name>")));
    }
    assert_eq!(
        answers[0], answers[1],
        "{method} {path}: the victim's object is visible to another tenant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_key_reaches_nothing_of_the_victim() {
    let s = Sweep::start(TestEnv::new()).await;
    let errors = format!("/ges/v1/tenants/{VICTIM}/api-errors");
    let victim_errors = s.e.admin_get(&errors).await.1["data"].clone();
    // The intruder's own failed calls are recorded under the intruder: leave that table out.
    let before = snapshot(&s.env, &["api_errors"]).await;
    let id_body = r#"{"id": "{}"}"#;
    let random_id = uuid::Uuid::new_v4().to_string();
    // An id: the victim's callback answers as an id that does not exist.
    for path in [
        "/engagement/v3/callbacks/retrieve",
        "/engagement/v3/callbacks/cancel",
    ] {
        same_as_nothing_id(&s, path, id_body, &random_id).await;
    }
    // A service only the victim has answers as a service nobody has.
    for path in [
        "/engagement/v3/callbacks/availability/{}",
        "/engagement/v3/callbacks/open-for/{}",
        "/engagement/v3/callbacks/queue-status/{}",
    ] {
        same_as_nothing(&s, "GET", path, None, OWN).await;
    }
    let create = r#"{"serviceName": "{}", "phoneNumber": "+12025550188"}"#;
    same_as_nothing(
        &s,
        "POST",
        "/engagement/v3/callbacks/create",
        Some(create),
        OWN,
    )
    .await;
    ewt_reveals_nothing(&s).await;
    assert_eq!(
        snapshot(&s.env, &["api_errors"]).await,
        before,
        "the intruder changed state"
    );
    assert_eq!(
        s.e.admin_get(&errors).await.1["data"],
        victim_errors,
        "the victim's failed calls changed"
    );
}

/// As [`same_as_nothing`], for a callback id (compared with a random one).
async fn same_as_nothing_id(s: &Sweep, path: &str, body: &str, random_id: &str) {
    let mut answers = Vec::new();
    for id in [s.callback.as_str(), random_id] {
        let (code, answer) = harness::send(
            s.http
                .post(format!("{}{path}", s.e.external))
                .header("x-api-key", &s.intruder)
                .header("content-type", "application/json")
                .body(body.replace("{}", id)),
        )
        .await;
        assert_eq!(code, 404, "intruder {path} on {id}: {answer}");
        assert_envelope(code, &answer, path);
        answers.push(harness::message(&answer).replace(id, "<id>"));
    }
    assert_eq!(
        answers[0], answers[1],
        "{path}: the victim's callback is visible"
    );
}

/// The wait estimate of a queue only the victim has reads as one nobody has.
async fn ewt_reveals_nothing(s: &Sweep) {
    let nothing = "nothing-at-all";
    let mut answers = Vec::new();
    for name in [OWN, nothing] {
        let path = format!("/engagement/v3/estimated-wait-time?mode=mode1&virtual-queues={name}");
        let (code, answer) = s.e.get(&s.intruder, &path).await;
        assert!(code < 500, "{path}: {code} {answer}");
        if code >= 400 {
            assert_envelope(code, &answer, &path);
        }
        let text = answer.to_string().replace(name, "<name>");
        let text = strip_corr_id(&text);
        answers.push((code, text));
    }
    assert_eq!(
        answers[0], answers[1],
        "the estimate of the victim's queue is visible"
    );
}

fn strip_corr_id(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let mut v = v;
    if let Some(status) = v.get_mut("status").and_then(Value::as_object_mut) {
        status.remove("corrId");
    }
    v.to_string()
}

/// The forms a leaked key could take: itself, its random part, hex and base64 of each.
fn leak_forms(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in [key, key.trim_start_matches("egk_")] {
        out.push(s.to_string());
        out.push(s.bytes().map(|b| format!("{b:02x}")).collect());
        let b64 = base64(s.as_bytes());
        out.push(b64.trim_end_matches('=').to_string());
        out.push(
            b64.trim_end_matches('=')
                .replace('+', "-")
                .replace('/', "_"),
        );
    }
    out
}

/// Standard base64 (the test needs only the encoder).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_rfc_examples() {
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}

/// Rows of any table of the schema whose text contains `needle` (case-insensitive).
async fn rows_containing(env: &TestEnv, needle: &str) -> Vec<String> {
    let pg = env.pg().await;
    let mut hits = Vec::new();
    for table in tables_of(env).await {
        let n: i64 = pg
            .query_one(
                &format!(
                    "SELECT count(*) FROM \"{}\".\"{table}\" t WHERE strpos(lower(t::text), lower($1)) > 0",
                    env.id
                ),
                &[&needle],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            hits.push(format!("{table}: {n} rows"));
        }
    }
    hits
}

/// Everything the environment's Redis keys hold, as text (names and values).
async fn redis_text(env: &TestEnv) -> String {
    let mut conn = env.redis().await;
    let mut text = String::new();
    for key in redis_keys(env).await {
        text.push_str(&key);
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let read = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).clone(),
            "hash" => redis::cmd("HGETALL").arg(&key).clone(),
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
            "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
            "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").clone(),
            _ => continue,
        };
        let value: redis::Value = read.query_async(&mut conn).await.unwrap();
        flatten(&value, &mut text);
    }
    text
}

fn flatten(v: &redis::Value, out: &mut String) {
    match v {
        redis::Value::BulkString(b) => out.push_str(&String::from_utf8_lossy(b)),
        redis::Value::SimpleString(s) => out.push_str(s),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().for_each(|i| flatten(i, out));
        }
        redis::Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        _ => {}
    }
    out.push('\n');
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_stored_only_hashed() {
    let s = Sweep::start(TestEnv::new()).await;
    let cli: Value = serde_json::from_str(
        &s.env
            .engage_cli(&["apikey", "create", "--tenant", VICTIM, "--label", "cli"]),
    )
    .unwrap();
    let cli = cli["key"].as_str().unwrap().to_string();
    // Use every key: a success, a recorded failed call, a refusal.
    for key in [&s.victim, &cli, &s.intruder, &s.revoked] {
        let phone = harness::next_phone();
        let _ = s.e.create(key).service(SHARED).phone(&phone).send().await;
        let _ =
            s.e.post(key, "/engagement/v3/callbacks/retrieve", json!({"id": "x"}))
                .await;
    }
    let redis = redis_text(&s.env).await;
    let log = s.e.proc.output();
    for key in [&s.victim, &cli, &s.intruder, &s.revoked] {
        for form in leak_forms(key) {
            let hits = rows_containing(&s.env, &form).await;
            assert!(
                hits.is_empty(),
                "an API key is stored as {form:?} in {hits:?}"
            );
            assert!(!redis.contains(&form), "an API key is in Redis as {form:?}");
            assert!(!log.contains(&form), "an API key is in the log as {form:?}");
        }
    }
    // The hashes are there: one per key (two tenants' first keys, revoked, spare, CLI).
    assert_eq!(
        s.env
            .count("SELECT count(*) FROM api_keys WHERE length(key_hash) = 32")
            .await,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_answers_are_in_the_envelope() {
    let env = TestEnv::new()
        .with("API_KEY_RATE_PER_SECOND", "1")
        .with("API_KEY_BURST", "1");
    let (_env, e, key) = harness::serve_tenant(env.with("AUTH_FAILURE_LIMIT", "3"), VICTIM).await;
    let path = "/engagement/v3/callbacks/retrieve";
    let body = json!({"id": uuid::Uuid::new_v4().to_string()});
    let mut limited = 0;
    for _ in 0..4 {
        let (code, answer) = e.post(&key, path, body.clone()).await;
        assert!(code == 404 || code == 429, "{code} {answer}");
        assert_envelope(code, &answer, "per-key rate");
        limited += usize::from(code == 429);
    }
    assert!(limited >= 2, "the per-key rate did not refuse");
    // Repeated failures from one client: 401, then 429 once the auth-failure limiter
    // (AUTH_FAILURE_LIMIT = 3 a minute) refuses them; either way in the envelope.
    let mut codes = Vec::new();
    for _ in 0..10 {
        let (code, answer) = e.post(&random_key(), path, body.clone()).await;
        assert!(code == 401 || code == 429, "{code} {answer}");
        assert_envelope(code, &answer, "auth failures");
        codes.push(code);
    }
    assert!(
        codes.ends_with(&[429; 5]),
        "the failure limiter did not refuse: {codes:?}"
    );
}

/// The function binaries (`functions/src/bin`) and whether each serves the public port.
const FUNCTIONS: &[(&str, bool)] = &[
    ("callbacks-create", true),
    ("callbacks-retrieve", true),
    ("callbacks-cancel", true),
    ("callbacks-reschedule", true),
    ("availability", true),
    ("open-for", true),
    ("queue-status", true),
    ("estimated-wait-time", true),
    ("call-in", true),
    ("statistics", true),
    ("admin", false),
    ("callback-settings", false),
    ("ors-events", false),
    ("gms", false),
];

#[test]
fn the_function_list_is_the_binaries() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/src/bin");
    let mut bins: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| Some(e.file_name().to_str()?.strip_suffix(".rs")?.to_string()))
        .collect();
    bins.sort();
    let mut listed: Vec<String> = FUNCTIONS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(bins, listed);
}

/// Each function binary (one per endpoint, as deployed on Knative or Lambda): on its `PORT`,
/// every route it serves refuses missing credentials with 401; a public one answers 404 as
/// for an unknown path to every internal route (admin, events, metrics, health detail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_binary_refuses_without_credentials_and_hides_internal_routes() {
    let env = TestEnv::new().with("AUTH_FAILURE_LIMIT", "0");
    // Migrations, a tenant and a service (the functions serve no admin API to make them).
    let _key = env.provision(VICTIM, SHARED, &open_service(json!({})));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for (name, public) in FUNCTIONS {
        let f = harness::Function::start(&env, name, &[]).await;
        let mut served = 0;
        for route in routes::all() {
            let url = format!("{}{}", f.url, route.path.replace("{ccid}", VICTIM));
            let method = Method::from_bytes(route.method.as_bytes()).unwrap();
            let mut req = http.request(method, url);
            if route.method == "POST" || route.method == "PUT" {
                req = req.json(&json!({}));
            }
            let (code, body) = harness::send(req).await;
            let ctx = format!("{name}: {} {}", route.method, route.path);
            if is_unknown_route(code, &body) {
                continue;
            }
            assert!(
                !(*public && route.port == Port::Internal),
                "{ctx}: an internal route on a public function's port: {code} {body}"
            );
            if route.auth != Auth::Open {
                // Without ContactCenterId a GMS route refuses with 400 before any credential
                // (docs/gms.md#addressing-and-tenants); every other route with 401.
                let refused = if route.auth == Auth::Gms { 400 } else { 401 };
                assert_eq!(code, refused, "{ctx}: {body}");
                assert_envelope(code, &body, &ctx);
                served += 1;
            }
        }
        assert!(served > 0, "{name} served none of the listed routes");
    }
}

//! Abuse resistance of the public port and the import of existing API keys
//! (docs/abuse.md): random keys cost (almost) no PostgreSQL, repeated failures from one client
//! are refused with 429 (client address from `TRUSTED_PROXIES` / `X-Forwarded-For`), the public
//! port shows no readiness detail and no backend error text, and an existing GES key imported
//! through the admin API or the CLI works on the public port, stored only hashed.

use std::{
    collections::BTreeMap,
    io::Write,
    net::IpAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use harness::{
    Engage, Fixture, PrivatePostgres, PrivateRedis, TestEnv, binary, message, next_phone, send,
};
use rand::{Rng, distr::Alphanumeric};
use serde_json::{Value, json};

const OPEN_FOR: &str = "/engagement/v3/callbacks/open-for/sales";

/// A key shaped like the GES documentation's examples: 40 random alphanumerics.
fn ges_key() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// A client whose requests leave from `local` (any 127/8 address is this machine).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<IpAddr>().ok())
        .build()
        .unwrap()
}

/// `GET open-for` on the public port with `key` and optional `X-Forwarded-For`; (status,
/// `Retry-After`, body).
async fn try_key(
    http: &reqwest::Client,
    engage: &Engage,
    key: &str,
    xff: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = http
        .get(format!("{}{OPEN_FOR}", engage.external))
        .header("x-api-key", key);
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
    (code, retry, body)
}

/// Imports `key` for `tenant` through the admin API.
async fn import(engage: &Engage, tenant: &str, body: Value) -> (u16, Value) {
    engage
        .admin_post(&format!("/ges/v1/tenants/{tenant}/api-keys"), body)
        .await
}

#[tokio::test]
async fn an_imported_ges_key_works_at_once_and_is_never_echoed_or_stored_plain() {
    let fx = Fixture::start(json!({"route_point": "5000"})).await;
    let key = ges_key();
    // An app already calling with its built-in key before the import: refused (and cached
    // as unknown on this replica).
    let (code, _, _) = try_key(&fx.engage.http, &fx.engage, &key, None).await;
    assert_eq!(code, 401);
    let (code, body) = import(&fx.engage, "acme", json!({"label": "ges app", "key": key})).await;
    assert_eq!(code, 201, "{body}");
    assert!(
        !body.to_string().contains(&key),
        "the answer echoes the key: {body}"
    );
    assert_eq!(body["data"]["imported"], true);
    assert_eq!(body["data"]["label"], "ges app");
    // Works at once on the replica that imported it (its negative entry forgotten).
    let id = fx
        .engage
        .create(&key)
        .service("sales")
        .phone(&next_phone())
        .id()
        .await;
    assert_eq!(fx.engage.retrieve(&key, &id).await["id"], id.as_str());
    // Listed like any key, stored only as its hash.
    let (_, keys) = fx.engage.admin_get("/ges/v1/tenants/acme/api-keys").await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 2, "{keys}");
    assert!(!keys.to_string().contains(&key));
    let pg = fx.env.pg().await;
    let rows = pg
        .query(
            "SELECT encode(key_hash, 'hex'), label FROM api_keys WHERE label = 'ges app'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].get(0);
    assert_eq!(stored.len(), 64, "a SHA-256");
    assert!(!stored.contains(&key));
}

#[tokio::test]
async fn a_key_value_already_in_use_is_409_without_naming_its_tenant() {
    let fx = Fixture::start(json!({"route_point": "5000"})).await;
    fx.engage.tenant("other-tenant").await;
    let key = ges_key();
    assert_eq!(import(&fx.engage, "acme", json!({"key": key})).await.0, 201);
    for tenant in ["acme", "other-tenant"] {
        let (code, body) = import(&fx.engage, tenant, json!({"label": "again", "key": key})).await;
        assert_eq!(code, 409, "{body}");
        let text = body.to_string();
        assert!(message(&body).contains("already in use"), "{body}");
        assert!(!text.contains("acme") && !text.contains(&key), "{body}");
    }
    // The key still belongs to acme alone.
    let id = fx
        .engage
        .create(&key)
        .service("sales")
        .phone(&next_phone())
        .id()
        .await;
    assert_eq!(fx.engage.retrieve(&fx.key, &id).await["id"], id.as_str());
    let pg = fx.env.pg().await;
    let n: i64 = pg
        .query_one("SELECT count(*) FROM api_keys WHERE label = 'again'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn bad_key_values_are_400_change_nothing_and_are_not_repeated() {
    let fx = Fixture::start(json!({"route_point": "5000"})).await;
    let long = "k".repeat(257);
    let bad: Vec<(Value, &str)> = vec![
        (json!("short-key"), "16 to 256 characters"),
        (json!(long), "16 to 256 characters"),
        (json!("a key with spaces inside it"), "printable ASCII"),
        (json!("tab\there-and-long-enough-yes"), "printable ASCII"),
        (json!("clé-avec-des-accents-ici"), "printable ASCII"),
        (json!("newline-inside\nthe-key-value"), "printable ASCII"),
        (json!(1234567890123456789_u64), "key"),
        (json!(["an-array-is-not-a-key"]), "key"),
    ];
    for (value, part) in bad {
        let (code, body) = import(&fx.engage, "acme", json!({"key": value})).await;
        assert_eq!(code, 400, "{value}: {body}");
        assert!(message(&body).contains(part), "{value}: {body}");
        if let Some(text) = value.as_str() {
            assert!(!body.to_string().contains(text), "echoed: {body}");
        }
    }
    let (code, body) = import(&fx.engage, "nobody", json!({"key": ges_key()})).await;
    assert_eq!(code, 404, "{body}");
    let pg = fx.env.pg().await;
    let n: i64 = pg
        .query_one("SELECT count(*) FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "only the fixture's key");
}

/// Runs `engage <args>` with `stdin`; (success, stdout, stderr).
fn cli_with_stdin(env: &TestEnv, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(binary("engage"))
        .args(args)
        .env_clear()
        .envs(&env.vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_imports_keys_from_a_file_or_stdin_never_printing_them() {
    let fx = Fixture::start(json!({"route_point": "5000"})).await;
    let (from_file, from_stdin) = (ges_key(), uuid::Uuid::new_v4().to_string());
    let file = std::env::temp_dir().join(format!("{}-key.txt", fx.env.id));
    std::fs::write(&file, format!("{from_file}\n")).unwrap();
    let path = file.display().to_string();
    let base = ["apikey", "create", "--tenant", "acme", "--label", "cli"];
    let out = fx
        .env
        .engage_cli(&[&base[..], &["--key-file", &path]].concat());
    assert!(!out.contains(&from_file), "printed: {out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["imported"],
        true
    );
    let (ok, out, err) = cli_with_stdin(
        &fx.env,
        &[&base[..], &["--key-stdin"]].concat(),
        &format!("  {from_stdin}\n"),
    );
    assert!(ok, "{err}");
    assert!(!out.contains(&from_stdin), "printed: {out}");
    for key in [&from_file, &from_stdin] {
        fx.engage
            .create(key)
            .service("sales")
            .phone(&next_phone())
            .id()
            .await;
    }
    // A bad value fails with the reason, without repeating it; a used one conflicts.
    std::fs::write(&file, "has spaces in the key value\n").unwrap();
    let (ok, _, err) = cli_with_stdin(&fx.env, &[&base[..], &["--key-file", &path]].concat(), "");
    assert!(
        !ok && err.contains("printable ASCII") && !err.contains("has spaces"),
        "{err}"
    );
    let (ok, _, err) = cli_with_stdin(&fx.env, &[&base[..], &["--key-stdin"]].concat(), &from_file);
    assert!(!ok && err.contains("already in use"), "{err}");
    let (ok, _, err) = cli_with_stdin(
        &fx.env,
        &[&base[..], &["--key-stdin", "--key-file", &path]].concat(),
        "",
    );
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let _ = std::fs::remove_file(&file);
}

/// Index and sequential scans of this schema's `api_keys`, as PostgreSQL counts them.
async fn key_table_scans(env: &TestEnv) -> i64 {
    env.pg()
        .await
        .query_one(
            "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables
             WHERE schemaname = $1 AND relname = 'api_keys'",
            &[&env.id],
        )
        .await
        .unwrap()
        .get(0)
}

/// The scan count once the server's connections are closed (a backend reports its counts
/// when it ends) and the figure has stopped moving.
async fn settled_scans(env: &TestEnv) -> i64 {
    let started = Instant::now();
    let mut last = key_table_scans(env).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = key_table_scans(env).await;
        if now == last && started.elapsed() > Duration::from_secs(2) {
            return now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "scans still moving"
        );
        last = now;
    }
}

#[tokio::test]
async fn five_thousand_random_keys_cost_at_most_100_postgres_lookups() {
    let mut fx = Fixture::start(json!({"route_point": "5000"})).await;
    let started = Instant::now();
    let codes: Vec<u16> = futures::stream::iter(0..5_000)
        .map(|_| {
            let (http, engage) = (&fx.engage.http, &fx.engage);
            async move {
                let key = format!("{}{}", ges_key(), uuid::Uuid::new_v4().simple());
                try_key(http, engage, &key, None).await.0
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut by_code = BTreeMap::new();
    for c in &codes {
        *by_code.entry(*c).or_insert(0) += 1;
    }
    assert!(
        by_code.keys().all(|c| *c == 401 || *c == 429),
        "{by_code:?}"
    );
    assert!(
        by_code.get(&429).copied().unwrap_or(0) >= 4_800,
        "{by_code:?}"
    );
    // Another client is not limited, and a known key passes at once.
    let other = client_from("127.0.0.2");
    assert_eq!(try_key(&other, &fx.engage, &ges_key(), None).await.0, 401);
    assert_eq!(try_key(&other, &fx.engage, &fx.key, None).await.0, 200);
    let counted = fx.engage.metric_sum("engage_api_key_lookups_total").await;
    fx.engage.proc.kill();
    let scans = settled_scans(&fx.env).await;
    println!(
        "5000 random keys (50 in flight) in {elapsed:?}: {by_code:?}; api_keys scans in \
         PostgreSQL {scans} (whole test, provisioning included), lookups counted {counted}"
    );
    assert!(scans <= 100, "{scans} scans of api_keys");
    assert!(counted <= 100.0, "{counted} lookups");
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_evade_the_limit() {
    let env = TestEnv::new().with("AUTH_FAILURE_LIMIT", "5");
    let fx = Fixture::with(env, &[], "acme", "sales", json!({"route_point": "5000"})).await;
    let http = &fx.engage.http;
    assert_eq!(try_key(http, &fx.engage, &fx.key, None).await.0, 200);
    for i in 0..5 {
        let xff = format!("10.9.8.{i}");
        let (code, _, body) = try_key(http, &fx.engage, &ges_key(), Some(&xff)).await;
        assert_eq!(code, 401, "{body}");
    }
    let (code, retry, body) = try_key(http, &fx.engage, &ges_key(), Some("10.9.8.77")).await;
    assert_eq!(code, 429, "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(message(&body).contains("failed API key attempts"), "{body}");
    assert_eq!(body["status"]["code"], 429);
    // Every spelling of the header is ignored from an untrusted peer, and the same unknown
    // key (no lookup) is limited too.
    let (code, _, _) = try_key(http, &fx.engage, &ges_key(), Some("1.1.1.1, 2.2.2.2")).await;
    assert_eq!(code, 429);
    // A known key of the same client (an app behind the same NAT) still passes: from the
    // cache, and after its cache entry expired (reloaded without charging the client).
    assert_eq!(try_key(http, &fx.engage, &fx.key, None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(try_key(http, &fx.engage, &fx.key, None).await.0, 200);
    // A key never seen live is charged: still limited.
    assert_eq!(try_key(http, &fx.engage, &ges_key(), None).await.0, 429);
    // A missing key is a plain 401.
    let (code, _) = send(http.get(format!("{}{OPEN_FOR}", fx.engage.external))).await;
    assert_eq!(code, 401);
    // Another socket client is counted on its own.
    let other = client_from("127.0.0.2");
    assert_eq!(try_key(&other, &fx.engage, &ges_key(), None).await.0, 401);
    // The internal port is not limited.
    let (code, _) = send(
        http.get(format!("{}{OPEN_FOR}", fx.engage.internal))
            .header("x-api-key", ges_key()),
    )
    .await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_is_limited_on_its_own() {
    let env = TestEnv::new()
        .with("AUTH_FAILURE_LIMIT", "3")
        .with("TRUSTED_PROXIES", "127.0.0.1/32, 192.0.2.0/24");
    let fx = Fixture::with(env, &[], "acme", "sales", json!({"route_point": "5000"})).await;
    let (http, e) = (&fx.engage.http, &fx.engage);
    for _ in 0..3 {
        assert_eq!(
            try_key(http, e, &ges_key(), Some("203.0.113.5")).await.0,
            401
        );
    }
    assert_eq!(
        try_key(http, e, &ges_key(), Some("203.0.113.5")).await.0,
        429
    );
    // The client cannot escape by forging entries left of what the proxies appended.
    let forged = "198.51.100.1, 203.0.113.5, 192.0.2.10";
    assert_eq!(try_key(http, e, &ges_key(), Some(forged)).await.0, 429);
    // A different client behind the same proxies is not affected.
    for _ in 0..3 {
        assert_eq!(
            try_key(http, e, &ges_key(), Some("203.0.113.6")).await.0,
            401
        );
    }
    assert_eq!(
        try_key(http, e, &ges_key(), Some("203.0.113.6")).await.0,
        429
    );
    // IPv6 clients by /64.
    for i in 0..3 {
        let xff = format!("2001:db8:7:7::{i}");
        assert_eq!(try_key(http, e, &ges_key(), Some(&xff)).await.0, 401);
    }
    assert_eq!(
        try_key(http, e, &ges_key(), Some("2001:db8:7:7::99"))
            .await
            .0,
        429
    );
    assert_eq!(
        try_key(http, e, &ges_key(), Some("2001:db8:7:8::1"))
            .await
            .0,
        401
    );
    // An untrusted peer's header is not read: 127.0.0.2 is the client, whatever it says.
    let other = client_from("127.0.0.2");
    for _ in 0..3 {
        assert_eq!(
            try_key(&other, e, &ges_key(), Some("203.0.113.9")).await.0,
            401
        );
    }
    assert_eq!(
        try_key(&other, e, &ges_key(), Some("203.0.113.10")).await.0,
        429
    );
}

/// Driver and network text that must never reach a public caller.
fn leaks(body: &str, ports: &[u16]) -> Vec<String> {
    let lower = body.to_ascii_lowercase();
    let mut found: Vec<String> = [
        "connection refused",
        "db error",
        "error:",
        "os error",
        "io error",
        "broken pipe",
        "timed out after",
        "tokio",
        "postgres",
        "redis",
        "127.0.0.1",
        "sqlstate",
        "pool",
    ]
    .iter()
    .filter(|p| lower.contains(*p))
    .map(|p| (*p).to_string())
    .collect();
    found.extend(
        ports
            .iter()
            .filter(|p| body.contains(&p.to_string()))
            .map(|p| format!("port {p}")),
    );
    found
}

/// Every public call an app makes, with the fixture's key and with an unknown one.
async fn public_calls(engage: &Engage, key: &str) -> Vec<(String, u16, String)> {
    let base = &engage.external;
    let mut out = Vec::new();
    for k in [key, "an-unknown-key-of-some-length"] {
        let reqs = [
            engage
                .http
                .post(format!("{base}/engagement/v3/callbacks/create"))
                .json(&json!({"serviceName": "sales", "phoneNumber": "+12025550143"})),
            engage
                .http
                .post(format!("{base}/engagement/v3/callbacks/retrieve"))
                .json(&json!({"id": uuid::Uuid::new_v4().to_string()})),
            engage
                .http
                .post(format!("{base}/engagement/v3/callbacks/cancel"))
                .json(&json!({"id": uuid::Uuid::new_v4().to_string()})),
            engage.http.get(format!("{base}{OPEN_FOR}")),
            engage
                .http
                .get(format!("{base}/engagement/v3/callbacks/availability/sales")),
            engage.http.get(format!(
                "{base}/engagement/v3/estimated-wait-time?mode=mode1&virtual-queues=sales"
            )),
        ];
        for req in reqs {
            let req = req.header("x-api-key", k).build().unwrap();
            let what = format!("{} {}", req.method(), req.url().path());
            let resp = engage.http.execute(req).await.unwrap();
            out.push((what, resp.status().as_u16(), resp.text().await.unwrap()));
        }
    }
    for path in [
        "/ges/v1/health/ready",
        "/ges/v1/health/live",
        "/ges/v1/health/detail",
    ] {
        let resp = engage
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        out.push((
            format!("GET {path}"),
            resp.status().as_u16(),
            resp.text().await.unwrap(),
        ));
    }
    out
}

/// Asserts that no public answer carries backend text or a 500; returns them for more checks.
async fn assert_no_leak(
    engage: &Engage,
    key: &str,
    ports: &[u16],
    phase: &str,
) -> Vec<(String, u16, String)> {
    let answers = public_calls(engage, key).await;
    for (what, code, body) in &answers {
        let found = leaks(body, ports);
        assert!(
            found.is_empty(),
            "{phase}: {what} → {code} leaks {found:?}: {body}"
        );
        assert!(*code != 500, "{phase}: {what} → 500: {body}");
    }
    answers
}

#[tokio::test]
async fn no_backend_error_text_reaches_public_callers() {
    let pg = PrivatePostgres::new();
    let (mut redis, mut voice) = (PrivateRedis::new(false), PrivateRedis::new(false));
    let env = TestEnv::on(&pg.url(), &redis.url(), &voice.url())
        .with("DB_POOL_TIMEOUT_MS", "500")
        .with("DB_CONNECT_TIMEOUT_MS", "500")
        .with("REDIS_TIMEOUT_MS", "500");
    let fx = Fixture::with(env, &[], "acme", "sales", json!({"route_point": "5000"})).await;
    let ports = [pg.port, redis.port, voice.port];
    assert_no_leak(&fx.engage, &fx.key, &ports, "all up").await;
    // Readiness on the public port says UP/DOWN only; the detail is internal-only.
    let (code, body) = send(
        fx.engage
            .http
            .get(format!("{}/ges/v1/health/detail", fx.engage.external)),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    redis.stop();
    voice.stop();
    assert_no_leak(&fx.engage, &fx.key, &ports, "both Redis down").await;
    pg.stop_server().unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await; // past the key cache
    let answers = assert_no_leak(&fx.engage, &fx.key, &ports, "PostgreSQL and Redis down").await;
    let ready = answers
        .iter()
        .find(|a| a.0 == "GET /ges/v1/health/ready")
        .unwrap();
    assert_eq!(ready.1, 503, "{ready:?}");
    let body: Value = serde_json::from_str(&ready.2).unwrap();
    assert_eq!(message(&body), "DOWN", "{body}");
    assert!(answers.iter().any(|a| a.1 == 503), "{answers:?}");
    // The internal port still tells the operator what is wrong.
    let (code, detail) = send(
        fx.engage
            .http
            .get(format!("{}/ges/v1/health/detail", fx.engage.internal)),
    )
    .await;
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["data"]["status"], "DOWN", "{detail}");
    assert!(
        detail["data"]["dependencies"][0]["error"].is_string(),
        "{detail}"
    );
    pg.start_server().unwrap();
}

#[tokio::test]
async fn a_frozen_postgres_bounds_key_lookups_and_caches_no_error_as_unknown() {
    let pg = PrivatePostgres::new();
    let env = TestEnv::on(
        &pg.url(),
        &harness::deps().redis_url,
        &harness::deps().voice_redis_url,
    )
    .with("REQUEST_TIMEOUT_MS", "2000")
    .with("DB_POOL_TIMEOUT_MS", "500");
    let fx = Fixture::with(env, &[], "acme", "sales", json!({"route_point": "5000"})).await;
    // A real key never used on the public port yet: its first lookup meets the outage.
    let fresh = ges_key();
    assert_eq!(
        import(&fx.engage, "acme", json!({"key": fresh})).await.0,
        201
    );
    pg.freeze();
    let started = Instant::now();
    // 50 in flight, each given up at the 2 s request timeout: about 4 rounds of 2 s.
    let keys: Vec<String> = (0..200).map(|_| ges_key()).chain([fresh.clone()]).collect();
    let answers: Vec<(u16, Value)> = futures::stream::iter(keys)
        .map(|key| {
            let e = &fx.engage;
            async move {
                let (code, _, body) = try_key(&e.http, e, &key, None).await;
                (code, body)
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let elapsed = started.elapsed();
    pg.thaw();
    for (code, body) in &answers {
        assert!([401, 429, 503].contains(code), "{code}: {body}");
        assert!(leaks(&body.to_string(), &[pg.port]).is_empty(), "{body}");
    }
    assert!(answers.iter().any(|a| a.0 == 503), "the outage was seen");
    assert!(
        elapsed < Duration::from_secs(20),
        "answers bounded: {elapsed:?}"
    );
    // Nothing learnt during the outage sticks: the real key works at once after it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, body) = try_key(&fx.engage.http, &fx.engage, &fresh, None).await;
        if code == 200 {
            break;
        }
        assert!(code == 503 && Instant::now() < deadline, "{code}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn random_keys_from_many_addresses_are_capped_by_the_lookup_budget() {
    let env = TestEnv::new()
        .with("TRUSTED_PROXIES", "127.0.0.1/32")
        .with("AUTH_LOOKUP_BUDGET", "10");
    let mut fx = Fixture::with(env, &[], "acme", "sales", json!({"route_point": "5000"})).await;
    let (http, e) = (&fx.engage.http, &fx.engage);
    assert_eq!(
        try_key(http, e, &fx.key, None).await.0,
        200,
        "seen live before"
    );
    // 5,000 random keys, each from its own forwarded address: no per-client limit applies.
    let started = Instant::now();
    let answers: Vec<(u16, Option<String>)> = futures::stream::iter(0..5_000u32)
        .map(|i| async move {
            let xff = format!("198.18.{}.{}", i / 250, i % 250);
            let (code, retry, _) = try_key(http, e, &ges_key(), Some(&xff)).await;
            (code, retry)
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(answers.iter().all(|a| a.0 == 401 || a.0 == 429));
    assert!(answers.iter().filter(|a| a.0 == 429).all(|a| a.1.is_some()));
    // The tenant's real key, reloaded after its cache entry expired, is not held back.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(try_key(http, e, &fx.key, Some("198.18.0.1")).await.0, 200);
    let counted = fx.engage.metric_sum("engage_api_key_lookups_total").await;
    fx.engage.proc.kill();
    let scans = settled_scans(&fx.env).await;
    // A burst of 10, then 10 a second (+ the fixture's own lookups).
    let bound = 10.0 * (elapsed.as_secs_f64() + 1.0) + 5.0;
    println!(
        "5000 random keys from 5000 addresses in {elapsed:?}: {} answered 429; api_keys scans \
         {scans}, lookups {counted} (bound {bound:.0})",
        answers.iter().filter(|a| a.0 == 429).count()
    );
    assert!(counted <= bound, "{counted} lookups > {bound}");
    assert!((scans as f64) <= bound + 5.0, "{scans} scans > {bound}");
}

/// A real key never used on this replica, sent by 300 requests at once with a lookup budget of
/// 2 per second: they share one lookup (and one unit of the budget), so none is refused. Before
/// the fix each request spent the budget itself and most of the first burst answered 429.
#[tokio::test]
async fn a_real_keys_first_burst_shares_one_lookup_and_is_never_refused() {
    let fx = Fixture::with(
        TestEnv::new().with("AUTH_LOOKUP_BUDGET", "2"),
        &[],
        "acme",
        "sales",
        json!({}),
    )
    .await;
    let http = reqwest::Client::new();
    let answers: Vec<_> = futures::stream::iter(0..300)
        .map(|_| try_key(&http, &fx.engage, &fx.key, None))
        .buffer_unordered(300)
        .collect()
        .await;
    let refused: Vec<_> = answers.iter().filter(|(c, _, _)| *c != 200).collect();
    assert!(
        refused.is_empty(),
        "{} refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
}

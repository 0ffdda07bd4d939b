//! TLS to both Redis roles (`rediss://`, docs/tls.md#redis): create → dispatch → voice-platform
//! events → COMPLETED with the service and the voice Redis on TLS, standalone and on a TLS
//! cluster; a wrong CA and a host name mismatch refused with messages that say what to fix;
//! the voice secret's `rejectUnauthorized: false` connecting to a server nobody trusts, with
//! its warning logged once. Servers, certificates (generated at test time) and binaries are
//! real; nothing here touches the shared servers' TLS (they have none).

use std::time::{Duration, Instant};

use harness::{
    Engage, Fixture, PrivateCluster, PrivatePostgres, PrivateRedis, Proc, ServerTls, TestEnv,
    TestPki, WorkerProc,
};
use serde_json::{Value, json};

/// `(status, detail)` of `GET /ges/v1/health/detail` on the internal port.
async fn detail(engage: &Engage) -> Value {
    let body: Value = engage
        .http
        .get(format!("{}/ges/v1/health/detail", engage.internal))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"].clone()
}

/// The dependency `name` of a health detail.
fn dependency<'a>(detail: &'a Value, name: &str) -> &'a Value {
    detail["dependencies"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {detail}"))
}

/// Waits until the process printed `needle` (its start-up TLS check); panics with the output.
async fn wait_output(proc: &Proc, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let out = proc.output();
        if out.contains(needle) {
            return out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {needle:?} in:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An environment whose two Redis roles are the given URLs, each trusting `ca`.
fn tls_env(service: &str, voice: &str, ca: &str, cluster: bool) -> TestEnv {
    let env = TestEnv::new()
        .with("REDIS_URL", service)
        .with("VOICE_REDIS_URL", voice);
    with_redis_tls(env, ca, cluster)
}

/// `env` with both Redis roles trusting `ca`, in cluster mode or not.
fn with_redis_tls(env: TestEnv, ca: &str, cluster: bool) -> TestEnv {
    let cluster = if cluster { "true" } else { "false" };
    env.with("REDIS_CLUSTER", cluster)
        .with("REDIS_TLS_CA_FILE", ca)
        .with("VOICE_REDIS_CLUSTER", cluster)
        .with("VOICE_REDIS_TLS_CA_FILE", ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_standalone_both_roles_create_dispatch_complete() {
    let pki = TestPki::new();
    let service = PrivateRedis::with_tls(ServerTls::of(&pki));
    let voice = PrivateRedis::with_tls(ServerTls::of(&pki));
    let ca = TestPki::path(&pki.ca_pem_path);
    let env = tls_env(&service.url(), &voice.url(), &ca, false);
    let fx = Fixture::dispatch(env, "tls", "sales", json!({})).await;
    let _worker = WorkerProc::start(&fx.env, &[]).await;
    // ors-sim reads VOICE_REDIS_URL and VOICE_REDIS_TLS_CA_FILE from the environment.
    let group = format!("{}-sim", fx.env.id);
    let sim_args = ["--agents", "2", "--handle-ms", "200", "--dist", "fixed"];
    let _sim = Proc::spawn(
        &fx.env,
        "ors-sim",
        &[&sim_args[..], &["--group", &group]].concat(),
        &[],
    );

    let id = fx.create().id().await;
    let done = fx
        .engage
        .wait_for(&fx.key, &id, 30, |cb| cb["callbackState"] == "COMPLETED")
        .await;
    assert_eq!(done["callbackReason"], "AGENT_CONNECTED", "{done}");
    assert_eq!(fx.env.census().await.0, 1, "one hand-off, read over TLS");

    let out = wait_output(&fx.engage.proc, "voice Redis").await;
    assert_eq!(
        out.matches("Redis TLS connection verified").count(),
        2,
        "{out}"
    );
    let d = detail(&fx.engage).await;
    assert_eq!(d["status"], "UP", "{d}");
}

/// Reads the voice stream of `env` over its (cluster) TLS configuration, as the binaries do.
async fn cluster_handoffs(
    env: &TestEnv,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let cfg = shared::Config::from_vars(env.vars.clone()).unwrap();
    let voice = shared::redis::voice(&cfg).unwrap();
    let mut conn = voice.conn().await.unwrap();
    redis::cmd("XRANGE")
        .arg(env.voice_stream())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_both_roles_create_dispatch_complete() {
    let pki = TestPki::new();
    let cluster = PrivateCluster::with_tls(ServerTls::of(&pki));
    let ca = TestPki::path(&pki.ca_pem_path);
    let env = tls_env(&cluster.urls(), &cluster.urls(), &ca, true);
    let fx = Fixture::dispatch(env, "tls", "sales", json!({})).await;
    let _worker = WorkerProc::start(&fx.env, &[]).await;

    complete_through_the_cluster(&fx).await;
    let out = wait_output(&fx.engage.proc, "voice Redis").await;
    assert_eq!(
        out.matches("Redis TLS connection verified").count(),
        2,
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_wrong_ca_is_refused_naming_the_ca_variable() {
    let pki = TestPki::new();
    let server = PrivateRedis::with_tls(ServerTls::of(&pki));
    // Service role: a CA that signed nothing the server presents. Voice role: no CA, so the
    // system roots, which do not hold the test CA either.
    let env = TestEnv::new()
        .with("REDIS_URL", &server.url())
        .with("REDIS_TLS_CA_FILE", &TestPki::path(&pki.wrong_ca_pem_path))
        .with("VOICE_REDIS_URL", &server.url());
    let engage = Engage::start(&env, &[]).await;
    let out = wait_output(&engage.proc, "voice Redis").await;
    assert!(
        out.contains("not trusted (the CA in REDIS_TLS_CA_FILE did not sign it)"),
        "{out}"
    );
    assert!(
        out.contains(
            "not trusted (set VOICE_REDIS_TLS_CA_FILE to the PEM file of the CA that signed it)"
        ),
        "{out}"
    );
    let d = detail(&engage).await;
    assert_eq!(d["status"], "DEGRADED", "{d}");
    let redis = dependency(&d, "redis");
    assert_eq!(redis["status"], "DOWN", "{d}");
    assert!(
        redis["error"]
            .as_str()
            .unwrap()
            .contains("REDIS_TLS_CA_FILE"),
        "{d}"
    );
    let voice = dependency(&d, "voice-redis");
    assert!(
        voice["error"]
            .as_str()
            .unwrap()
            .contains("VOICE_REDIS_TLS_CA_FILE"),
        "{d}"
    );
    // Nothing reached the server unencrypted or otherwise: no key of this test exists.
    let mut conn = server.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", env.id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_host_name_mismatch_is_refused_naming_the_url() {
    let pki = TestPki::new();
    // Signed by the trusted CA, but for another name than 127.0.0.1.
    let server = PrivateRedis::with_tls(ServerTls::wrong_name(&pki));
    let ca = TestPki::path(&pki.ca_pem_path);
    let env = tls_env(&server.url(), &server.url(), &ca, false);
    let engage = Engage::start(&env, &[]).await;
    let out = wait_output(&engage.proc, "voice Redis").await;
    assert!(
        out.contains(
            "host name mismatch: the Redis server's certificate does not name the host in REDIS_URL"
        ),
        "{out}"
    );
    assert!(
        out.contains(harness::WRONG_NAME),
        "the name the certificate carries: {out}"
    );
    let d = detail(&engage).await;
    let voice = dependency(&d, "voice-redis");
    assert!(
        voice["error"].as_str().unwrap().contains("VOICE_REDIS_URL"),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_voice_secret_reject_unauthorized_false_connects_and_warns_once() {
    let pki = TestPki::new();
    let voice = PrivateRedis::with_tls(ServerTls::of(&pki));
    let folder = pki.dir.join("secrets-ors");
    std::fs::create_dir_all(&folder).unwrap();
    let secret = json!({"servername": "127.0.0.1", "port": voice.port.to_string(), "rejectUnauthorized": "false"});
    std::fs::write(folder.join("voice-redis-ors-stream"), secret.to_string()).unwrap();
    let mut env = TestEnv::new().with("CONFIG_FOLDERS", &TestPki::path(&folder));
    env.vars.remove("VOICE_REDIS_URL");
    let fx = Fixture::dispatch(env, "tls", "sales", json!({})).await;
    let _worker = WorkerProc::start(&fx.env, &[]).await;

    let id = fx.create().id().await;
    // The hand-off reaches the untrusted server's stream (read back trusting its CA).
    let mut conn = voice.conn().await;
    let started = Instant::now();
    loop {
        let entries = harness::stream_entries(&mut conn, fx.env.voice_stream()).await;
        if entries
            .iter()
            .any(|(_, f)| f.get("callback_id") == Some(&id))
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no hand-off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = wait_output(&fx.engage.proc, "voice Redis").await;
    let warning = "certificate verification is OFF for VOICE_REDIS_SERVERNAME";
    assert_eq!(out.matches(warning).count(), 1, "{out}");
    let line = out.lines().find(|l| l.contains(warning)).unwrap();
    assert!(line.contains("WARN"), "{line}");
    let d = detail(&fx.engage).await;
    assert_eq!(dependency(&d, "voice-redis")["status"], "UP", "{d}");
}

/// Creates an immediate callback, waits for its hand-off on the (cluster) voice stream and
/// posts what the voice platform would (ors-sim reads standalone streams only) until it is
/// COMPLETED/AGENT_CONNECTED.
async fn complete_through_the_cluster(fx: &Fixture) {
    let id = fx.create().id().await;
    let started = Instant::now();
    let entry = loop {
        let entries = cluster_handoffs(&fx.env).await;
        if let Some((_, f)) = entries
            .into_iter()
            .find(|(_, f)| f.get("callback_id") == Some(&id))
        {
            break f;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no hand-off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let attempt: i64 = entry
        .get("attempt")
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let states = [
        ("QUEUED", None),
        ("ROUTING", None),
        ("PROCESSING", None),
        ("COMPLETED", Some("AGENT_CONNECTED")),
    ];
    for (state, reason) in states {
        let mut body = json!({"state": state, "attempt": attempt});
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        let (code, answer) = fx.engage.event(&id, body).await;
        assert_eq!(code, 200, "{state}: {answer}");
    }
    let done = fx.retrieve(&id).await;
    let end = (
        done["callbackState"].as_str(),
        done["callbackReason"].as_str(),
    );
    assert_eq!(end, (Some("COMPLETED"), Some("AGENT_CONNECTED")), "{done}");
}

/// Everything on TLS at once: PostgreSQL `verify-full` and `rediss://` on both roles, first on
/// standalone servers (hand-offs consumed by `ors-sim`), then on a TLS cluster; create →
/// dispatch → events → COMPLETED each time, and every PostgreSQL session encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_everywhere_postgres_verify_full_and_rediss_standalone_and_cluster() {
    let pki = TestPki::new();
    let pg = PrivatePostgres::with_tls(&pki.server_cert_path, &pki.server_key_path);
    let database_url = pg.verify_full_url(&pki.ca_pem_path);
    let ca = TestPki::path(&pki.ca_pem_path);

    let service = PrivateRedis::with_tls(ServerTls::of(&pki));
    let voice = PrivateRedis::with_tls(ServerTls::of(&pki));
    let env = TestEnv::on(&database_url, &service.url(), &voice.url());
    let env = with_redis_tls(env, &ca, false);
    let fx = Fixture::dispatch(env, "tls", "sales", json!({})).await;
    let _worker = WorkerProc::start(&fx.env, &[]).await;
    let group = format!("{}-sim", fx.env.id);
    let sim_args = ["--agents", "1", "--handle-ms", "200", "--group", &group];
    let _sim = Proc::spawn(&fx.env, "ors-sim", &sim_args, &[]);
    let id = fx.create().id().await;
    let done = fx
        .engage
        .wait_for(&fx.key, &id, 30, |cb| cb["callbackState"] == "COMPLETED")
        .await;
    assert_eq!(done["callbackReason"], "AGENT_CONNECTED", "{done}");
    assert_all_postgres_sessions_encrypted(&fx.env).await;

    let cluster = PrivateCluster::with_tls(ServerTls::of(&pki));
    let env = TestEnv::on(&database_url, &cluster.urls(), &cluster.urls());
    let env = with_redis_tls(env, &ca, true);
    let fx = Fixture::dispatch(env, "tls", "sales", json!({})).await;
    let _worker = WorkerProc::start(&fx.env, &[]).await;
    complete_through_the_cluster(&fx).await;
    assert_all_postgres_sessions_encrypted(&fx.env).await;
}

/// No session of the binaries or the harness on the private PostgreSQL goes without TLS.
async fn assert_all_postgres_sessions_encrypted(env: &TestEnv) {
    let row = env
        .pg()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name IN ('engage', 'engage-tests')",
            &[],
        )
        .await
        .unwrap();
    let (tls, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(tls >= 2, "{tls} TLS sessions (serve and worker at least)");
    assert_eq!(plain, 0, "{plain} PostgreSQL sessions without TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_url_to_a_plain_server_asks_whether_it_speaks_tls() {
    let plain = PrivateRedis::new(false);
    let tls_url = plain.url().replace("redis://", "rediss://");
    let env = TestEnv::new()
        .with("REDIS_URL", &tls_url)
        .with("VOICE_REDIS_URL", &tls_url);
    let engage = Engage::start(&env, &[]).await;
    let out = wait_output(&engage.proc, "voice Redis").await;
    assert!(
        out.contains(
            "TLS: no answer from the server at REDIS_URL (if it persists: does the server speak TLS"
        ),
        "{out}"
    );
    let d = detail(&engage).await;
    let voice = dependency(&d, "voice-redis");
    assert!(
        voice["error"]
            .as_str()
            .unwrap()
            .contains("no answer from the server at VOICE_REDIS_URL"),
        "{d}"
    );
}

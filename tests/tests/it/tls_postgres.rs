//! TLS to PostgreSQL (docs/tls.md#postgresql), against a private server with `ssl = on` and
//! certificates generated at test time (`TestPki`): the whole flow under `verify-full`, every
//! connection of the binaries (serve, worker, a function binary, the CLI) encrypted; an untrusted CA, a host-name mismatch and a server
//! without TLS (and an expired certificate) refused at start with a message that says what to fix, changing nothing;
//! `disable`/`prefer` still working against the plain shared server.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use harness::{
    CREATE, Engage, Fixture, Function, PrivatePostgres, Proc, TestEnv, TestPki, WRONG_NAME,
    WorkerProc, binary, deps, next_phone,
};
use serde_json::json;

/// `url` with `query` appended (after `?` or `&`).
fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// An environment on `database_url` and the shared Redis servers.
fn env_on(database_url: &str) -> TestEnv {
    let d = deps();
    TestEnv::on(database_url, &d.redis_url, &d.voice_redis_url)
}

/// Runs `bin args` on `env` and returns (exit success, everything it printed); fails the test
/// when it has not exited after 20 s (a refused start must not hang).
fn run(env: &TestEnv, bin: &str, args: &[&str]) -> (bool, String) {
    let log = std::env::temp_dir().join(format!("{}-{bin}-run.log", env.id));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(binary(bin))
        .args(args)
        .env_clear()
        .envs(&env.vars)
        .env("WORKER_PORT", harness::free_port().to_string())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} {args:?} still runs after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (status.success(), out)
}

/// `engage migrate` and `engage-worker` both exit non-zero at start, printing `parts`.
fn refused_at_start(env: &TestEnv, parts: &[&str]) {
    for (bin, args) in [("engage", &["migrate"][..]), ("engage-worker", &[][..])] {
        let (ok, out) = run(env, bin, args);
        assert!(!ok, "{bin} started: {out}");
        // Shown with --no-capture: the messages an operator reads (quoted in docs/tls.md).
        eprintln!("{bin}: {}", out.lines().last().unwrap_or(""));
        for part in parts {
            assert!(out.contains(part), "{bin}: {part:?} not in:\n{out}");
        }
    }
}

/// Whether `schema` exists, asked over `env` (a connection that works).
async fn schema_exists(env: &TestEnv, schema: &str) -> bool {
    let n: i64 = env
        .pg()
        .await
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    n > 0
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_serves_dispatches_and_completes_with_every_connection_encrypted() {
    let pki = TestPki::new();
    let pg = PrivatePostgres::with_tls(&pki.server_cert_path, &pki.server_key_path);
    let env = env_on(&pg.verify_full_url(&pki.ca_pem_path)).with("WORKER_MAINTENANCE_S", "1");
    let fx = Fixture::dispatch(env, "tls", "care", json!({})).await;
    let _worker = WorkerProc::start(&fx.env, &[]).await;
    let _sim = Proc::spawn(
        &fx.env,
        "ors-sim",
        &[
            "--agents",
            "1",
            "--queue-ms",
            "200",
            "--handle-ms",
            "200",
            "--group",
            &format!("{}-sim", fx.env.id),
        ],
        &[],
    );
    let id = fx.create().id().await;
    let done = fx
        .engage
        .wait_for(&fx.key, &id, 30, |cb| cb["callbackState"] == "COMPLETED")
        .await;
    assert_eq!(done["callbackReason"], "AGENT_CONNECTED", "{done}");

    // Every session of the binaries (serve and worker), and the harness's own, is TLS.
    let db = fx.env.pg().await;
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl),
                    bool_and(s.ssl) FILTER (WHERE a.pid = pg_backend_pid())
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name IN ('engage', 'engage-tests')",
            &[],
        )
        .await
        .unwrap();
    let (tls, plain, mine): (i64, i64, Option<bool>) = (row.get(0), row.get(1), row.get(2));
    assert!(tls >= 2, "{tls} TLS sessions (serve and worker at least)");
    assert_eq!(plain, 0, "{plain} sessions without TLS");
    assert_eq!(mine, Some(true));
}

/// (TLS sessions, plain sessions) of the binaries (`application_name` engage) on `env`'s server.
async fn engage_sessions(env: &TestEnv) -> (i64, i64) {
    let row = env
        .pg()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'engage'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_binary_and_the_cli_connect_with_verify_full_too() {
    let pki = TestPki::new();
    let pg = PrivatePostgres::with_tls(&pki.server_cert_path, &pki.server_key_path);
    let env = env_on(&pg.verify_full_url(&pki.ca_pem_path));
    let provisioning = env.clone();
    let key = tokio::task::spawn_blocking(move || {
        provisioning.provision("fn", "care", &json!({"route_point": "5000"}))
    })
    .await
    .unwrap();
    let f = Function::start(&env, "callbacks-create", &[]).await;
    let (code, body) = f
        .post(
            &key,
            CREATE,
            json!({"serviceName": "care", "phoneNumber": next_phone()}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (tls, plain) = engage_sessions(&env).await;
    assert!(tls >= 1 && plain == 0, "{tls} TLS, {plain} plain sessions");
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_at_start_naming_the_ca_setting() {
    let pki = TestPki::new();
    let pg = PrivatePostgres::with_tls(&pki.server_cert_path, &pki.server_key_path);
    let (ca, wrong) = (path(&pki.ca_pem_path), path(&pki.wrong_ca_pem_path));
    let url = |q: &str| pg.url_with(q);
    // The unrelated CA in the URL, for verify-full, verify-ca and (a root certificate given,
    // as libpq) require.
    for mode in ["verify-full", "verify-ca", "require"] {
        let env = env_on(&url(&format!("sslmode={mode}&sslrootcert={wrong}")));
        refused_at_start(
            &env,
            &[
                &format!("PostgreSQL's certificate at 127.0.0.1 is not trusted (sslmode={mode})"),
                &format!("it must be issued by a CA in sslrootcert {wrong}"),
                "set sslrootcert in DATABASE_URL (or DATABASE_TLS_CA_FILE, or the secret DB-CA-CERT)",
            ],
        );
        let good = env_on(&pg.verify_full_url(&pki.ca_pem_path));
        assert!(
            !schema_exists(&good, &env.id).await,
            "a refused start created its schema"
        );
    }
    // The same CA from DATABASE_TLS_CA_FILE, and no CA at all (the system roots).
    let env = env_on(&url("sslmode=verify-full")).with("DATABASE_TLS_CA_FILE", &wrong);
    refused_at_start(&env, &[&format!("a CA in DATABASE_TLS_CA_FILE {wrong}")]);
    let env = env_on(&url("sslmode=verify-full"));
    refused_at_start(&env, &["is not trusted", "the system's root certificates"]);
    // The unrelated CA, then the right one, as the secret file DB-CA-CERT.
    let secrets = pki.dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::copy(&pki.wrong_ca_pem_path, secrets.join("DB-CA-CERT")).unwrap();
    let env = env_on(&url("sslmode=verify-full")).with("CONFIG_FOLDERS", &path(&secrets));
    refused_at_start(&env, &["a CA in DB_CA_CERT (secret DB-CA-CERT)"]);
    std::fs::copy(&pki.ca_pem_path, secrets.join("DB-CA-CERT")).unwrap();
    let (ok, out) = run(&env, "engage", &["migrate"]);
    assert!(ok, "{out}");
    // The right CA by file works; so does the DNS name the certificate also lists.
    let env = env_on(&url("sslmode=verify-full")).with("DATABASE_TLS_CA_FILE", &ca);
    assert!(run(&env, "engage", &["migrate"]).0);
    let localhost = format!(
        "postgres://postgres@localhost:{}/engage?sslmode=verify-full&sslrootcert={ca}",
        pg.port
    );
    let (ok, out) = run(&env_on(&localhost), "engage", &["migrate"]);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn a_host_name_mismatch_is_refused_and_verify_ca_skips_the_name_check() {
    let pki = TestPki::new();
    let pg = PrivatePostgres::with_tls(&pki.wrong_name_cert_path, &pki.wrong_name_key_path);
    let ca = path(&pki.ca_pem_path);
    let env = env_on(&pg.verify_full_url(&pki.ca_pem_path));
    refused_at_start(
        &env,
        &[
            &format!(
                "PostgreSQL's certificate does not match the host name 127.0.0.1 (it names \
                 {WRONG_NAME}) (sslmode=verify-full)"
            ),
            "or use sslmode=verify-ca, which checks the CA but skips the host name check",
        ],
    );
    // verify-ca: the CA is right, the name is not checked; require and prefer: not verified.
    for query in [
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=require&sslrootcert={ca}"),
        "sslmode=require".to_string(),
        "sslmode=prefer".to_string(),
    ] {
        let env = env_on(&pg.url_with(&query));
        let (ok, out) = run(&env, "engage", &["migrate"]);
        assert!(ok, "{query}: {out}");
        let ssl: bool = env
            .pg()
            .await
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{query}: connection not encrypted");
    }
    // A server certificate of an unrelated CA is still refused by verify-ca.
    let wrong = path(&pki.wrong_ca_pem_path);
    let env = env_on(&pg.url_with(&format!("sslmode=verify-ca&sslrootcert={wrong}")));
    refused_at_start(&env, &["is not trusted (sslmode=verify-ca)"]);
}

#[tokio::test]
async fn an_expired_certificate_is_refused_at_start() {
    let pki = TestPki::new();
    let pg = PrivatePostgres::with_tls(&pki.expired_cert_path, &pki.expired_key_path);
    for mode in ["verify-full", "verify-ca"] {
        let env = env_on(&pg.url_with(&format!(
            "sslmode={mode}&sslrootcert={}",
            path(&pki.ca_pem_path)
        )));
        refused_at_start(
            &env,
            &[
                "PostgreSQL's certificate at 127.0.0.1 is outside its validity period",
                "renew it, or check this machine's clock",
            ],
        );
    }
}

#[tokio::test]
async fn requiring_tls_of_a_server_without_it_is_refused_at_start() {
    let plain = &deps().database_url;
    let ca = TestPki::new();
    for query in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-full&sslrootcert={}", path(&ca.ca_pem_path)),
    ] {
        let env = env_on(&with_query(plain, &query));
        refused_at_start(
            &env,
            &[
                "cannot connect to PostgreSQL: the server does not support TLS, but DATABASE_URL \
                 requires it",
                "set sslmode=prefer (TLS when offered) or sslmode=disable",
            ],
        );
        assert!(!schema_exists(&TestEnv::new(), &env.id).await);
    }
}

#[tokio::test]
async fn disable_and_prefer_still_work_against_a_server_without_tls() {
    for mode in ["disable", "prefer"] {
        let env = env_on(&with_query(
            &deps().database_url,
            &format!("sslmode={mode}"),
        ));
        let engage = Engage::start(&env, &[]).await;
        let key = engage
            .provision("plain", "care", json!({"route_point": "5000"}))
            .await;
        let id = engage
            .create(&key)
            .service("care")
            .phone(&next_phone())
            .id()
            .await;
        assert_eq!(engage.retrieve(&key, &id).await["id"], id.as_str());
    }
}

#[tokio::test]
async fn bad_tls_settings_are_refused_before_any_connection() {
    let plain = &deps().database_url;
    let pki = TestPki::new();
    let junk = pki.dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = path(&junk);
    for (query, extra, part) in [
        (
            "sslmode=verify_full",
            None,
            "sslmode \"verify_full\" is not one of",
        ),
        (
            "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            None,
            "sslrootcert /nonexistent/ca.pem: cannot read the file",
        ),
        (
            "sslmode=verify-full",
            Some(junk.as_str()),
            "holds no PEM certificate",
        ),
    ] {
        let mut env = env_on(&with_query(plain, query));
        if let Some(file) = extra {
            env = env.with("DATABASE_TLS_CA_FILE", file);
        }
        let (ok, out) = run(&env, "engage", &["migrate"]);
        assert!(!ok && out.contains(part), "{query}: {out}");
        assert!(out.contains("configuration error"), "{out}");
    }
}

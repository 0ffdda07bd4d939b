//! Test harness: starts the local PostgreSQL and Redis when they are not running, gives each
//! test its own PostgreSQL schema, Redis key prefix and stream names, and spawns the real
//! binaries (`engage serve`, function binaries, the worker) on free ports.
//!
//! Binaries are taken from the cargo target folder next to the running test executable;
//! `just test` builds them first (`cargo build --workspace --bins`).

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

mod cluster;
pub mod fake_fcm;
mod fake_gws;
mod fixtures;
mod postgres;
mod readback;
pub mod siteverify;
mod tls;
pub mod ui;
pub use cluster::PrivateCluster;
pub use fake_gws::{FakeGws, GwsMode};
pub use fixtures::{
    CANCEL, CREATE, Create, Fixture, RETRIEVE, in_secs, next_phone, open_service, serve_tenant,
};
pub use postgres::{PrivatePostgres, signal};
pub use readback::{
    Entry, command_total, commandstats, parse_commandstats, stream_census, stream_entries,
};
pub use tls::{ServerTls, TestPki, WRONG_NAME};

/// The admin token every test deployment uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The voice-platform events token every test deployment uses (and `ors-sim` sends).
pub const ORS_EVENTS_TOKEN: &str = "test-ors-events-token-0123456789";

/// Connection settings of the shared local services (started once per test process).
#[derive(Debug, Clone)]
pub struct Deps {
    /// `DATABASE_URL` of the shared PostgreSQL (each test then takes a schema of its own).
    pub database_url: String,
    /// `REDIS_URL` of the shared service Redis (each test takes a key prefix of its own).
    pub redis_url: String,
    /// `VOICE_REDIS_URL` of the shared voice Redis (each test takes streams of its own).
    pub voice_redis_url: String,
    /// Cluster node URLs (comma-separated), when the cluster was started.
    pub cluster_urls: String,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn run_deps(arg: &str) -> BTreeMap<String, String> {
    let out = Command::new("bash")
        .arg(repo_root().join("infra/local/deps.sh"))
        .arg(arg)
        .stderr(Stdio::inherit())
        .output()
        .expect("infra/local/deps.sh runs");
    assert!(out.status.success(), "infra/local/deps.sh {arg} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Starts (if needed) PostgreSQL, the service Redis and the voice Redis.
pub fn deps() -> &'static Deps {
    static DEPS: OnceLock<Deps> = OnceLock::new();
    DEPS.get_or_init(|| {
        let env = run_deps("up");
        Deps {
            database_url: env["DATABASE_URL"].clone(),
            redis_url: env["REDIS_URL"].clone(),
            voice_redis_url: env["VOICE_REDIS_URL"].clone(),
            cluster_urls: env["ENGAGE_CLUSTER_URLS"].clone(),
        }
    })
}

/// Starts (if needed) the local Redis cluster (3 primaries, 3 replicas); returns its node URLs.
pub fn cluster() -> &'static str {
    static CLUSTER: OnceLock<String> = OnceLock::new();
    CLUSTER.get_or_init(|| run_deps("cluster")["ENGAGE_CLUSTER_URLS"].clone())
}

/// Ports handed to test servers: below the kernel's ephemeral range (32768 and up by default),
/// so that no outgoing connection of a busy test run takes a port between its pick and the
/// server's bind (a CI run once lost a cluster node that way). Cluster nodes take theirs from
/// [`CLUSTER_PORTS`], whose bus ports (+10000) lie above this range.
const FREE_PORTS: std::ops::Range<u16> = 22_768..30_000;

/// Client ports of test cluster nodes; their bus ports are 30000–32767.
pub(crate) const CLUSTER_PORTS: std::ops::Range<u16> = 20_000..22_768;

/// A free TCP port on loopback, below the kernel's ephemeral range (see `FREE_PORTS`).
pub fn free_port() -> u16 {
    free_port_in(FREE_PORTS)
}

/// A port of `range` nothing listens on now (picked at random, so that parallel test
/// processes rarely pick the same one).
pub(crate) fn free_port_in(range: std::ops::Range<u16>) -> u16 {
    loop {
        let p = rand::random_range(range.clone());
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Path of a workspace binary built by cargo.
pub fn binary(name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps/; tools such as `bench` from target/<profile>/.
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe folder");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target profile folder");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// One isolated environment: its own schema, Redis prefix and stream names.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Unique id of this environment.
    pub id: String,
    /// Environment variables for every process of this environment.
    pub vars: BTreeMap<String, String>,
}

/// The variable that caps the back-off of the worker's liveness `PING`; the suite sets it to
/// the `PING`'s base interval (no back-off) unless a test asks for the default.
pub const WAKE_PING_IDLE: &str = "WORKER_WAKE_PING_IDLE_S";

impl TestEnv {
    /// A fresh environment on the shared PostgreSQL and standalone Redis.
    pub fn new() -> Self {
        let d = deps();
        Self::on(&d.database_url, &d.redis_url, &d.voice_redis_url)
    }

    /// A fresh environment on the given servers (private ones of a fault test or chaos row).
    pub fn on(database_url: &str, redis_url: &str, voice_redis_url: &str) -> Self {
        let id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut vars = BTreeMap::new();
        for (k, v) in [
            ("DATABASE_URL", database_url),
            ("REDIS_URL", redis_url),
            ("VOICE_REDIS_URL", voice_redis_url),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("ORS_EVENTS_TOKEN", ORS_EVENTS_TOKEN),
            ("LOG_LEVEL", "INFO"),
            ("DB_POOL_SIZE", "8"),
            // Load-style tests send thousands of creates with one key; the tests of the
            // per-key limit set their own values.
            ("API_KEY_RATE_PER_SECOND", "0"),
            // No back-off of the wake subscription's liveness PING (one per 2 s of silence,
            // however long): the suite's freeze attacks measure the bound of a wait of 2 s.
            // The back-off's own tests, the idle-cost test, the bench and the chaos suite run
            // the binaries' default ([`TestEnv::with_default_wake_ping`];
            // docs/derived-state.md#wake-ups).
            (WAKE_PING_IDLE, "2"),
        ] {
            vars.insert(k.to_string(), v.to_string());
        }
        // Every environment has its own credentials key (docs/credentials.md), never committed.
        let key = shared::credentials::seal::generate_key().expect("random credentials key");
        vars.insert("CREDENTIALS_KEY".into(), key);
        vars.insert("DB_SCHEMA".into(), id.clone());
        vars.insert("REDIS_PREFIX".into(), id.clone());
        vars.insert("VOICE_STREAM".into(), format!("{id}:NewCallbackStream"));
        vars.insert(
            "CONTROL_STREAM".into(),
            format!("{id}:CallbackControlStream"),
        );
        Self { id, vars }
    }

    /// Same environment with an extra or changed variable.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.vars.insert(key.to_string(), value.to_string());
        self
    }

    /// Same environment with the binaries' own back-off of the wake subscription's liveness
    /// `PING` (the suite turns it off: [`WAKE_PING_IDLE`]).
    pub fn with_default_wake_ping(mut self) -> Self {
        self.vars.remove(WAKE_PING_IDLE);
        self
    }

    /// The voice stream name of this environment.
    pub fn voice_stream(&self) -> &str {
        &self.vars["VOICE_STREAM"]
    }

    /// A PostgreSQL client whose `search_path` is this environment's schema, connected as the
    /// binaries connect (the same configuration and TLS connector: `sslmode`, `sslrootcert`).
    pub async fn pg(&self) -> tokio_postgres::Client {
        self.try_pg().await.expect("pg connect")
    }

    /// As [`Self::pg`], answering the error (within `DB_CONNECT_TIMEOUT_MS`) instead of panicking.
    pub async fn try_pg(&self) -> anyhow::Result<tokio_postgres::Client> {
        let db = shared::config::DbConfig::from_vars(self.vars.clone())?;
        let mut pg = db.pg_config()?;
        pg.options(format!("-c search_path={}", self.id))
            .application_name("engage-tests");
        let (client, conn) = pg.connect(shared::db::tls::connector(&db.tls)?).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// A connection to the service Redis (standalone; over TLS as the binaries connect).
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis_client("REDIS_URL")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect")
    }

    /// A RESP2 subscriber on the standalone Redis (keyspace notifications).
    pub async fn redis_pubsub(&self) -> redis::aio::PubSub {
        self.redis_client("REDIS_URL")
            .get_async_pubsub()
            .await
            .expect("redis subscribe")
    }

    /// A connection to the voice Redis (standalone; over TLS as the binaries connect).
    pub async fn voice(&self) -> redis::aio::MultiplexedConnection {
        self.redis_client("VOICE_REDIS_URL")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect")
    }

    /// A client for the Redis at `self.vars[var]`, with that role's TLS settings when it is
    /// `rediss://` (read through the configuration, as the binaries read it).
    fn redis_client(&self, var: &str) -> redis::Client {
        let url = self.vars[var].as_str();
        let info = redis::IntoConnectionInfo::into_connection_info(url).expect("redis url");
        if !shared::redis::tls::is_tls_url(url) {
            return redis::Client::open(info).expect("redis url");
        }
        let cfg = shared::Config::from_vars(self.vars.clone()).expect("environment configuration");
        let tls = if var == "REDIS_URL" {
            cfg.redis.tls
        } else {
            cfg.voice.tls
        };
        shared::redis::tls::install_crypto_provider();
        shared::redis::tls::client(info, &tls).expect("redis TLS client")
    }

    /// Runs `engage <args>` to completion; returns stdout.
    pub fn engage_cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary("engage"))
            .args(args)
            .env_clear()
            .envs(&self.vars)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .expect("engage runs");
        assert!(
            out.status.success(),
            "engage {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl TestEnv {
    /// Provisions through the `engage` CLI (no server needed): migrations, the tenant, one
    /// service with `settings`, and a fresh API key, which is returned. For tests of function
    /// binaries, which serve no admin API.
    pub fn provision(&self, tenant: &str, service: &str, settings: &Value) -> String {
        self.engage_cli(&["migrate"]);
        self.engage_cli(&["tenant", "create", "--id", tenant, "--name", tenant]);
        let file = std::env::temp_dir().join(format!("{}-{service}.json", self.id));
        std::fs::write(&file, settings.to_string()).expect("write service settings");
        let file_arg = file.display().to_string();
        self.engage_cli(&[
            "service", "put", "--tenant", tenant, "--name", service, "--file", &file_arg,
        ]);
        let _ = std::fs::remove_file(&file);
        let out = self.engage_cli(&["apikey", "create", "--tenant", tenant, "--label", "test"]);
        let key: Value = serde_json::from_str(&out).expect("apikey create prints JSON");
        key["key"].as_str().expect("key").to_string()
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// A running process that is killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The spawned binary; killed when the `Proc` is dropped.
    pub child: Child,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `bin args` with the environment's variables; output goes to a log file.
    pub fn spawn(env: &TestEnv, bin: &str, args: &[&str], extra: &[(&str, String)]) -> Self {
        let log = std::env::temp_dir().join(format!("{}-{bin}-{}.log", env.id, free_port()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary(bin))
            .args(args)
            .env_clear()
            .envs(&env.vars)
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::from(file.try_clone().expect("dup")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn binary");
        Self { child, log }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit (after [`Self::terminate`]); panics after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "process did not exit in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running function binary (`functions/src/bin/<name>.rs`) on free ports.
#[derive(Debug)]
pub struct Function {
    /// The function binary's process (its output in `proc.log`).
    pub proc: Proc,
    /// `$PORT`: the function's routes and the liveness/readiness probes.
    pub port: u16,
    /// `METRICS_PORT`: `/metrics` and `/ges/v1/health/detail`.
    pub metrics_port: u16,
    /// Base URL of the function's routes, `http://127.0.0.1:<port>`.
    pub url: String,
    /// The client the test's requests go through (plain, no timeout of its own).
    pub http: reqwest::Client,
}

impl Function {
    /// Spawns function `name` with `extra` variables and waits until it is ready (on new
    /// ports when another test took one of its free ports first).
    pub async fn start(env: &TestEnv, name: &str, extra: &[(&str, String)]) -> Self {
        for _ in 0..3 {
            let (port, metrics_port) = (free_port(), free_port());
            let mut vars = vec![
                ("PORT", port.to_string()),
                ("METRICS_PORT", metrics_port.to_string()),
            ];
            vars.extend(extra.iter().cloned());
            let mut proc = Proc::spawn(env, name, &[], &vars);
            let http = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{port}");
            if wait_ready(&http, &format!("{url}/ges/v1/health/ready"), &mut proc).await {
                return Self {
                    proc,
                    port,
                    metrics_port,
                    url,
                    http,
                };
            }
        }
        panic!("{name} started three times on ports another process took");
    }

    /// A public API call (`x-api-key`) on the function's port.
    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        send(
            self.http
                .post(format!("{}{path}", self.url))
                .header("x-api-key", key)
                .json(&body),
        )
        .await
    }
}

/// A running `engage serve`.
#[derive(Debug)]
pub struct Engage {
    /// The `engage serve` process (its output in `proc.log`).
    pub proc: Proc,
    /// Base URL of the internal port (admin API, events, health), `http://127.0.0.1:<internal>`.
    pub internal: String,
    /// Base URL of the public port (the Engagement API), `http://127.0.0.1:<external>`.
    pub external: String,
    /// The client the test's requests go through (plain, no timeout of its own).
    pub http: reqwest::Client,
}

/// Waits until `url` answers 200. Returns `false` when the process exited because one of
/// its free ports was taken by another test between `free_port` and its bind (the caller
/// starts it again on new ports); panics with the process output on any other exit or after
/// 30 s.
pub async fn wait_ready(http: &reqwest::Client, url: &str, proc: &mut Proc) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return true;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            let output = proc.output();
            assert!(
                output.contains("Address already in use"),
                "{url}: the process exited ({status}) before it was ready; output:\n{output}"
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} not ready after 30 s; output:\n{}", proc.output());
}

impl Engage {
    /// Starts `engage serve` (plus `extra_args`) on free ports and waits until it is ready.
    /// A free port can be taken by another test between `free_port` and the bind; the
    /// readiness answer may then come from that test's server while this one has exited, so a
    /// start counts only when this process still runs and its external port answers too
    /// (otherwise it is retried on new ports).
    pub async fn start(env: &TestEnv, extra_args: &[&str]) -> Self {
        for _ in 0..2 {
            if let Some(engage) = Self::try_start(env, extra_args).await {
                return engage;
            }
        }
        Self::try_start(env, extra_args)
            .await
            .expect("engage serve started three times on ports another process took")
    }

    async fn try_start(env: &TestEnv, extra_args: &[&str]) -> Option<Self> {
        let (internal, external) = (free_port(), free_port());
        let mut args = vec!["serve"];
        args.extend_from_slice(extra_args);
        let mut proc = Proc::spawn(
            env,
            "engage",
            &args,
            &[
                ("INTERNAL_PORT", internal.to_string()),
                ("EXTERNAL_PORT", external.to_string()),
                // Voice-platform events come back to this instance unless the test says otherwise.
                (
                    "GES_URL",
                    env.vars
                        .get("GES_URL")
                        .cloned()
                        .unwrap_or_else(|| format!("http://127.0.0.1:{internal}")),
                ),
            ],
        );
        let http = reqwest::Client::new();
        let internal = format!("http://127.0.0.1:{internal}");
        let external = format!("http://127.0.0.1:{external}");
        if !wait_ready(&http, &format!("{internal}/ges/v1/health/ready"), &mut proc).await {
            return None;
        }
        let own = matches!(proc.child.try_wait(), Ok(None))
            && http
                .get(format!("{external}/engagement/v3/openapi.json"))
                .send()
                .await
                .is_ok();
        own.then_some(Self {
            proc,
            internal,
            external,
            http,
        })
    }

    /// An admin request on the internal port.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.internal))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    /// `GET` of `path` on the internal port with the admin token; (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.admin(reqwest::Method::GET, path, None).await
    }

    /// An admin `PUT` of `body`.
    pub async fn admin_put(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin(reqwest::Method::PUT, path, Some(body)).await
    }

    /// An admin `POST` of `body`.
    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    /// `DELETE` of `path` on the internal port with the admin token; (status, body).
    pub async fn admin_delete(&self, path: &str) -> (u16, Value) {
        self.admin(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a tenant and returns a fresh API key for it.
    pub async fn tenant(&self, id: &str) -> String {
        let (code, body) = self
            .admin(
                reqwest::Method::POST,
                "/ges/v1/tenants",
                Some(json!({"id": id, "name": id})),
            )
            .await;
        assert!(code == 201 || code == 409, "tenant create: {code} {body}");
        let (code, body) = self
            .admin(
                reqwest::Method::POST,
                &format!("/ges/v1/tenants/{id}/api-keys"),
                Some(json!({"label": "test"})),
            )
            .await;
        assert_eq!(code, 201, "key create: {body}");
        body["data"]["key"].as_str().expect("key").to_string()
    }

    /// Creates or replaces a service of a tenant.
    pub async fn service(&self, tenant: &str, name: &str, settings: Value) {
        let (code, body) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/ges/v1/tenants/{tenant}/services/{name}"),
                Some(settings),
            )
            .await;
        assert!(code == 200 || code == 201, "service put: {code} {body}");
    }

    /// A public API call on the external port.
    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        send(
            self.http
                .post(format!("{}{path}", self.external))
                .header("x-api-key", key)
                .json(&body),
        )
        .await
    }

    /// A public GET on the external port.
    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        send(
            self.http
                .get(format!("{}{path}", self.external))
                .header("x-api-key", key),
        )
        .await
    }
}

impl Engage {
    /// The sum of every series of a counter or gauge on this process's internal `/metrics`
    /// (all label sets added up; 0 when the metric is absent).
    pub async fn metric_sum(&self, name: &str) -> f64 {
        metric_sum(&self.metrics().await, name)
    }

    /// This process's internal `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.internal))
            .send()
            .await
            .expect("metrics scraped")
            .text()
            .await
            .expect("metrics body")
    }
}

/// Sums the samples of `name` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `status.message` of an envelope ("" when absent).
pub fn message(body: &Value) -> &str {
    body["status"]["message"].as_str().unwrap_or("")
}

/// Asserts that an answer has status `code` and that its message mentions `part`.
#[track_caller]
pub fn assert_refused(answer: (u16, &Value), code: u16, part: &str) {
    let (got, body) = answer;
    assert_eq!(got, code, "{body}");
    assert!(message(body).contains(part), "{part:?} not in {body}");
}

/// Sends a request; returns the status and the JSON body (`Null` when not JSON).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request sent");
    let code = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The next daylight-saving change of an IANA zone after now: `spring` = clocks jump forward
/// (a gap), otherwise clocks fall back (an overlap). Returns the instant and the local date it
/// happens on, so tests stay valid whatever the current date.
pub fn next_dst_change(zone: &str, spring: bool) -> (jiff::Timestamp, jiff::civil::Date) {
    let tz = jiff::tz::TimeZone::get(zone).expect("known zone");
    let now = jiff::Timestamp::now();
    for t in tz.following(now) {
        let at = t.timestamp();
        let before = tz.to_offset(at - jiff::SignedDuration::from_secs(1));
        if (t.offset() > before) == spring {
            return (at, tz.to_datetime(at).date());
        }
    }
    panic!("{zone} has no DST change ahead");
}

/// The next two daylight-saving changes of a zone and the name of the business-hours rule
/// [`Engage::hours_on_dst_days`] put for them (the zone with `/` as `-`).
#[derive(Debug, Clone)]
pub struct DstDays {
    /// When the clocks next jump forward.
    pub spring_at: jiff::Timestamp,
    /// The local date of that jump.
    pub spring: jiff::civil::Date,
    /// When the clocks next fall back.
    pub fall_at: jiff::Timestamp,
    /// The local date of that fall.
    pub fall: jiff::civil::Date,
    /// The business-hours rule's name.
    pub name: String,
}

impl Engage {
    /// Puts business hours of `tenant` in `zone`, open from 00:00 to `until` on the dates of
    /// the zone's next two daylight-saving changes only.
    pub async fn hours_on_dst_days(&self, tenant: &str, zone: &str, until: &str) -> DstDays {
        let (spring_at, spring) = next_dst_change(zone, true);
        let (fall_at, fall) = next_dst_change(zone, false);
        let name = zone.replace('/', "-");
        let (code, body) = self
            .admin_put(
                &format!("/ges/v1/tenants/{tenant}/business-hours/{name}"),
                json!({"timezone": zone, "exceptions": [
                    {"date": spring.to_string(), "open": [["00:00", until]]},
                    {"date": fall.to_string(), "open": [["00:00", until]]}
                ]}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        DstDays {
            spring_at,
            spring,
            fall_at,
            fall,
            name,
        }
    }
}

/// `days` days from now at `hour`:00 UTC.
pub fn day_at(days: i64, hour: i8) -> jiff::Timestamp {
    let date = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(jiff::Span::new().days(days))
        .expect("a date within jiff's range");
    local("UTC", date, hour, 0)
}

/// The field of callback `id` (text form) in its service's throttle hash `…:act`
/// (`i:` + `shared::redis::throttle::member`).
pub fn throttle_field(id: &str) -> String {
    let id: uuid::Uuid = id.parse().expect("callback id");
    format!("i:{}", shared::redis::throttle::member(id))
}

/// `CONFIG SET` on a private Redis.
pub async fn config_set(conn: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(conn)
        .await
        .expect("config set");
}

/// A local wall-clock time of `zone` as an instant (earlier instant in an overlap).
pub fn local(zone: &str, date: jiff::civil::Date, hour: i8, minute: i8) -> jiff::Timestamp {
    let tz = jiff::tz::TimeZone::get(zone).expect("known zone");
    tz.to_timestamp(date.at(hour, minute, 0, 0))
        .expect("valid local time")
}

/// `t` in the Engagement API wire format (`2026-05-28T15:30:00.000Z`).
pub fn wire(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A Redis server owned by one test (for tests that flush, stop or count commands): never the
/// shared instances. Killed when dropped.
#[derive(Debug)]
pub struct PrivateRedis {
    /// Port it listens on (kept across restarts).
    pub port: u16,
    dir: PathBuf,
    /// Leave `dir` when dropped ([`Self::keep`]).
    kept: std::sync::atomic::AtomicBool,
    persistent: bool,
    child: Option<Child>,
    /// With TLS: it listens only on its TLS port.
    tls: Option<ServerTls>,
}

impl PrivateRedis {
    /// Starts one on a free port; `persistent` keeps data across [`Self::stop`]/[`Self::start`]
    /// (append-only file, fsync always).
    pub fn new(persistent: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("engage-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = Self {
            port,
            dir,
            kept: false.into(),
            persistent,
            child: None,
            tls: None,
        };
        r.start();
        r
    }

    /// One speaking only TLS on its port (`rediss://`), with `tls`'s certificate; clients are
    /// not asked for certificates. Not persistent.
    pub fn with_tls(tls: ServerTls) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("engage-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = Self {
            port,
            dir,
            kept: false.into(),
            persistent: false,
            child: None,
            tls: Some(tls),
        };
        r.start();
        r
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server and waits until it answers.
    pub fn start(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            Some(tls) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(tls.server_args()),
            None => cmd.arg("--port").arg(self.port.to_string()),
        };
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--daemonize")
            .arg("no")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        self.child = Some(cmd.spawn().expect("redis-server runs"));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let up = match &self.tls {
                Some(tls) => tls.cli_answers(self.port),
                None => Self::answers(self.port),
            };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("private redis on {} did not start", self.port);
    }

    /// Whether the server answers a read (not just accepts connections: while it loads its
    /// append-only file it refuses commands with `-LOADING`).
    fn answers(port: u16) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"*2\r\n$6\r\nEXISTS\r\n$1\r\nx\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[0] == b':')
    }

    /// SIGSTOP: connections stay open, nothing answers (a slow or partitioned Redis).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} private redis");
        }
    }

    /// Stops the server (SIGKILL; with persistence every write is already on disk).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new connection to this server (panics when it cannot connect; with TLS it trusts the
    /// server's CA).
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let tls = shared::redis::RedisTls {
            ca_pem: self
                .tls
                .as_ref()
                .map(|t| std::fs::read(&t.ca).expect("CA file")),
            ..Default::default()
        };
        shared::redis::tls::install_crypto_provider();
        let info = redis::IntoConnectionInfo::into_connection_info(self.url()).expect("redis url");
        shared::redis::tls::client(info, &tls)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect")
    }
}

impl PrivateRedis {
    /// Leaves the server's folder (with a persistent server, its append-only file) in place
    /// when dropped, for a post-mortem; returns it.
    pub fn keep(&self) -> PathBuf {
        self.kept.store(true, std::sync::atomic::Ordering::Relaxed);
        self.dir.clone()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        if !self.kept.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running `engage-worker` with its `/health` and `/metrics` port.
#[derive(Debug)]
pub struct WorkerProc {
    /// The `engage-worker` process (its output in `proc.log`).
    pub proc: Proc,
    /// Base URL of its `/health` and `/metrics`, `http://127.0.0.1:<WORKER_PORT>`.
    pub url: String,
}

impl WorkerProc {
    /// Starts `engage-worker` and waits until `/health` answers.
    pub async fn start(env: &TestEnv, extra: &[(&str, String)]) -> Self {
        for _ in 0..3 {
            let port = free_port();
            let mut vars: Vec<(&str, String)> = vec![("WORKER_PORT", port.to_string())];
            vars.extend(extra.iter().cloned());
            let mut proc = Proc::spawn(env, "engage-worker", &[], &vars);
            let url = format!("http://127.0.0.1:{port}");
            if wait_ready(&reqwest::Client::new(), &format!("{url}/health"), &mut proc).await {
                return Self { proc, url };
            }
        }
        panic!("engage-worker started three times on ports another process took");
    }

    /// The sum of a metric's samples (all label sets) from `/metrics`; 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        metric_sum(&text, name)
    }
}

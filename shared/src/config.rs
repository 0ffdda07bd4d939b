//! Configuration, read once at start and validated.
//!
//! Every area is one flat struct read with `envy` from a merged source: the process
//! environment, overridden by secret files found in the folders listed in `CONFIG_FOLDERS`
//! (comma-separated, as mounted on Kubernetes: `/secrets-infra,/secrets-ors,/secrets-gws`).
//! A secret file's name becomes the variable name (`DB-PASSWORD` → `DB_PASSWORD`); the JSON
//! file `voice-redis-ors-stream` expands to `VOICE_REDIS_*` variables. Nothing reads the
//! environment after [`Config::load`]; binaries pass the result down in an `Arc`.
//! With the `aws-secrets` feature, `Config::load_with_aws` (module `aws_secrets`) also
//! overlays the keys of the AWS Secrets Manager secrets named in `AWS_SECRETS_ID`, the same way.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::redis::RedisTls;

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub(crate) String);

/// The whole configuration of a process; each binary uses the areas it needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// PostgreSQL connection and pool.
    pub db: DbConfig,
    /// The service Redis (derived state: schedule index, queue views, throttles).
    pub redis: RedisConfig,
    /// The voice platform's Redis and streams.
    pub voice: VoiceConfig,
    /// Ports, limits and admin access of the HTTP front.
    pub http: HttpConfig,
    /// Log level, format and line length (`LOG_*`).
    pub log: LogConfig,
    /// Dispatcher tuning (used by the worker and `engage serve --with-worker`).
    pub worker: WorkerConfig,
    /// Push notifications (`FCM_*`, `PUSH_*`).
    pub push: PushConfig,
    /// Keys of the per-tenant credentials vault (`CREDENTIALS_*`).
    pub credentials: CredentialsConfig,
    /// CAPTCHA verification of creates (`CAPTCHA_*`).
    pub captcha: CaptchaConfig,
    /// The GWS statistics proxy (`GWS_*`; docs/statistics.md).
    pub gws: GwsConfig,
}

/// PostgreSQL settings (`DATABASE_URL`, `DB_*`).
#[derive(Debug, Clone, Deserialize)]
pub struct DbConfig {
    /// Connection URL, e.g. `postgres://engage@127.0.0.1:5432/engage`; libpq's `sslmode`
    /// and `sslrootcert` are honoured (docs/tls.md#postgresql).
    #[serde(rename = "database_url")]
    pub url: SecretString,
    /// PEM file of the CAs PostgreSQL's certificate must chain to (when `sslrootcert` is
    /// not in the URL).
    #[serde(rename = "database_tls_ca_file", default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The same CAs as PEM text (secret file `DB-CA-CERT`), when neither of the above is set.
    #[serde(rename = "db_ca_cert", default)]
    pub ca_cert: Option<String>,
    /// TLS settings resolved from the above at load ([`crate::db::tls::DbTls`]).
    #[serde(skip)]
    pub tls: crate::db::tls::DbTls,
    /// Overrides the URL's user (secret file `DB-USER`).
    #[serde(rename = "db_user", default)]
    pub user: Option<String>,
    /// Overrides the URL's password (secret file `DB-PASSWORD`).
    #[serde(rename = "db_password", default)]
    pub password: Option<SecretString>,
    /// Maximum connections per process. Keep `containerConcurrency` consistent with it.
    #[serde(rename = "db_pool_size", default = "defaults::db_pool_size")]
    pub pool_size: usize,
    /// How long a request waits for a pooled connection before answering 503.
    #[serde(
        rename = "db_pool_timeout_ms",
        default = "defaults::db_pool_timeout_ms"
    )]
    pub pool_timeout_ms: u64,
    /// Connect timeout for a new connection.
    #[serde(
        rename = "db_connect_timeout_ms",
        default = "defaults::db_connect_timeout_ms"
    )]
    pub connect_timeout_ms: u64,
    /// Longest wait for a row lock (`lock_timeout`), ms: a lock held by a stuck session (an API
    /// host cut off mid-transaction) delays others by at most this, then they answer 503 or retry.
    #[serde(
        rename = "db_lock_timeout_ms",
        default = "defaults::db_lock_timeout_ms"
    )]
    pub lock_timeout_ms: u64,
    /// PostgreSQL ends a session idle inside a transaction for this long
    /// (`idle_in_transaction_session_timeout`), ms, releasing its locks: no transaction of ours
    /// pauses between statements for more than a round trip.
    #[serde(
        rename = "db_idle_in_tx_timeout_ms",
        default = "defaults::db_idle_in_tx_timeout_ms"
    )]
    pub idle_in_tx_timeout_ms: u64,
    /// Optional schema: every connection sets `search_path` to it (used for test isolation).
    #[serde(rename = "db_schema", default)]
    pub schema: Option<String>,
    /// Insert statements the create batcher runs at once (group commit).
    #[serde(
        rename = "db_batch_in_flight",
        default = "defaults::db_batch_in_flight"
    )]
    pub batch_in_flight: usize,
}

/// Service Redis settings (`REDIS_*`).
#[derive(Debug, Clone, Deserialize)]
pub struct RedisConfig {
    /// Redis URL (`redis://host:port/db`); in cluster mode a comma-separated list of nodes.
    #[serde(rename = "redis_url", default = "defaults::redis_url")]
    pub url: String,
    /// Connect in cluster mode.
    #[serde(rename = "redis_cluster", default)]
    pub cluster: bool,
    /// Password (secret file `REDIS-CACHEKEY`); overrides one in the URL.
    #[serde(rename = "redis_cachekey", default)]
    pub password: Option<SecretString>,
    /// Prefix of every key (lets several deployments or tests share one Redis).
    #[serde(rename = "redis_prefix", default = "defaults::redis_prefix")]
    pub prefix: String,
    /// Number of schedule-index shards (`{sched:N}` ZSETs).
    #[serde(
        rename = "redis_schedule_shards",
        default = "defaults::redis_schedule_shards"
    )]
    pub schedule_shards: u16,
    /// The shard count before a change of `REDIS_SCHEDULE_SHARDS` (0 = none): workers also
    /// claim from those shards until every API replica writes the new layout
    /// (docs/SCALING.md#changing-the-shard-count).
    #[serde(rename = "redis_schedule_shards_old", default)]
    pub schedule_shards_old: u16,
    /// How far ahead the schedule index holds callbacks, seconds (0 = everything): a create
    /// due later leaves its callback to the worker's horizon loader, which indexes it as its
    /// time comes within reach (docs/derived-state.md#the-horizon).
    #[serde(
        rename = "redis_schedule_horizon_s",
        default = "defaults::redis_schedule_horizon_s"
    )]
    pub schedule_horizon_s: u32,
    /// Timeout of one Redis command; a request never waits longer on Redis.
    #[serde(rename = "redis_timeout_ms", default = "defaults::redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Seconds after which a service's throttle state is re-seeded from PostgreSQL.
    #[serde(default = "defaults::throttle_reseed_seconds")]
    pub throttle_reseed_seconds: u32,
    /// PEM file of the CA that signs the service Redis's certificate (`rediss://` URLs); the
    /// system roots when unset (docs/tls.md#redis).
    #[serde(rename = "redis_tls_ca_file", default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The same CA as PEM text (secret file `REDIS-TLS-CA` in a `CONFIG_FOLDERS` folder).
    #[serde(rename = "redis_tls_ca", default)]
    pub tls_ca: Option<String>,
    /// Resolved TLS settings (the CA read once at start).
    #[serde(skip)]
    pub tls: RedisTls,
}

/// Voice platform settings (`VOICE_*`, `CONTROL_STREAM`).
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceConfig {
    /// Voice Redis URL; defaults to the service Redis (single-box installs).
    #[serde(rename = "voice_redis_url", default)]
    pub redis_url: Option<String>,
    /// Connect to the voice Redis in cluster mode.
    #[serde(rename = "voice_redis_cluster", default)]
    pub redis_cluster: bool,
    /// Password of the voice Redis (from the `voice-redis-ors-stream` secret).
    #[serde(rename = "voice_redis_password", default)]
    pub redis_password: Option<SecretString>,
    /// Host name of the voice Redis (from the `voice-redis-ors-stream` secret).
    #[serde(rename = "voice_redis_servername", default)]
    pub redis_servername: Option<String>,
    /// Port of the voice Redis (from the `voice-redis-ors-stream` secret).
    #[serde(rename = "voice_redis_port", default)]
    pub redis_port: Option<u16>,
    /// Whether the URL built from the server name uses TLS (secret field `tls`); unset, TLS
    /// follows the secret's `rejectUnauthorized` being present (docs/tls.md#redis).
    #[serde(rename = "voice_redis_tls", default)]
    pub redis_tls: Option<bool>,
    /// `false` turns certificate verification of the voice Redis off (the secret's
    /// `rejectUnauthorized`), logged as a warning at start.
    #[serde(rename = "voice_redis_reject_unauthorized", default)]
    pub redis_reject_unauthorized: Option<bool>,
    /// PEM file of the CA that signs the voice Redis's certificate; the system roots when unset.
    #[serde(rename = "voice_redis_tls_ca_file", default)]
    pub redis_tls_ca_file: Option<PathBuf>,
    /// The same CA as PEM text (secret file `VOICE-REDIS-TLS-CA`).
    #[serde(rename = "voice_redis_tls_ca", default)]
    pub redis_tls_ca: Option<String>,
    /// Replicas that must hold a hand-off before the worker records it (Redis `WAIT` on the
    /// stream's primary; 0 = do not wait). With 1, a failover of the voice Redis cannot lose
    /// a recorded hand-off (docs/voice-platform.md#failover).
    #[serde(rename = "voice_redis_replica_acks", default)]
    pub replica_acks: u8,
    /// How long the worker waits for those replicas before handing the batch back (ms).
    #[serde(
        rename = "voice_redis_ack_timeout_ms",
        default = "defaults::voice_redis_ack_timeout_ms"
    )]
    pub ack_timeout_ms: u64,
    /// Resolved TLS settings of the voice Redis (the CA read once at start).
    #[serde(skip)]
    pub tls: RedisTls,
    /// Stream that starts a voice session per callback.
    #[serde(rename = "voice_stream", default = "defaults::voice_stream")]
    pub stream: String,
    /// Stream of control entries (cancel, reschedule) for live sessions.
    #[serde(default = "defaults::control_stream")]
    pub control_stream: String,
    /// Base URL the voice platform posts state events to (`{url}/ges/v1/ors/callbacks/{id}/events`).
    #[serde(default = "defaults::ges_url")]
    pub ges_url: String,
}

/// Settings of the HTTP front: ports, body limits, timeouts, admin and events tokens.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// Port of a single-function binary (Knative sets it).
    #[serde(default = "defaults::port")]
    pub port: u16,
    /// All-in-one: port serving every route (UI, admin, voice events, metrics).
    #[serde(default = "defaults::internal_port")]
    pub internal_port: u16,
    /// All-in-one: port serving only the public Engagement API allowlist.
    #[serde(default = "defaults::external_port")]
    pub external_port: u16,
    /// Port of the side listener serving `/metrics` and health detail for function binaries
    /// (0 = none). Kept off the function's public port on purpose.
    #[serde(default = "defaults::metrics_port")]
    pub metrics_port: u16,
    /// Bearer token of the admin API; the admin API answers 401 to everything when unset.
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    /// Bearer token the voice platform must send on its state events (`/ges/v1/ors/…`);
    /// required by the binaries serving that route ([`Config::require_ors_events_token`]).
    #[serde(default)]
    pub ors_events_token: Option<SecretString>,
    /// Body limit of the public port, bytes.
    #[serde(default = "defaults::external_body_limit")]
    pub external_body_limit: usize,
    /// Body limit of the internal port, bytes.
    #[serde(default = "defaults::internal_body_limit")]
    pub internal_body_limit: usize,
    /// `REQUEST_TIMEOUT_MS`: the deadline of one request in ms (default 15,000); every request
    /// answers within it plus 2.25 s (docs/bounded-answers.md).
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `HEADER_READ_TIMEOUT_MS`: how long a connection may take to send a request's head, and
    /// how long an idle keep-alive connection is kept (default 10,000; docs/http-server.md).
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// How long after SIGTERM in-flight requests may still finish.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Public port: sustained requests per second per API key, per process (0 = no limit).
    #[serde(default = "defaults::api_key_rate_per_second")]
    pub api_key_rate_per_second: u32,
    /// Public port: requests an API key may send at once above the sustained rate.
    #[serde(default = "defaults::api_key_burst")]
    pub api_key_burst: u32,
    /// Public port: seconds the per-tenant CORS origins are cached.
    #[serde(default = "defaults::cors_cache_seconds")]
    pub cors_cache_seconds: u64,
    /// Estimated wait time `mode2`: seconds without a dequeue, while callbacks wait, after
    /// which a queue counts as unattended (estimate `-1`).
    #[serde(default = "defaults::ewt_agent_activity_window_s")]
    pub ewt_agent_activity_window_s: u64,
    /// Seconds between background dependency checks that keep the health gauges current
    /// (each pings both Redis servers once: the idle cost of a process).
    #[serde(default = "defaults::health_refresh_s")]
    pub health_refresh_s: u64,
    /// Lifetime of cached API keys and service settings; admin changes reach other replicas
    /// within it (0 = no caching).
    #[serde(default = "defaults::cache_ttl_ms")]
    pub cache_ttl_ms: u64,
    /// `TRUSTED_PROXIES`: comma-separated CIDRs (or single addresses) of the proxies in front
    /// of the public port whose `X-Forwarded-For` is believed; empty (default) = the socket
    /// peer is the client and `X-Forwarded-For` is ignored (docs/abuse.md#client-address).
    #[serde(default)]
    pub trusted_proxies: TrustedProxies,
    /// `AUTH_FAILURE_LIMIT`: failed API-key attempts per minute per client address on the
    /// public port before further attempts answer 429 without a lookup (0 = off; default 30;
    /// docs/abuse.md#failure-limiter).
    #[serde(default = "defaults::auth_failure_limit")]
    pub auth_failure_limit: u32,
    /// `AUTH_LOOKUP_BUDGET`: PostgreSQL lookups per second, per process, of API keys the process
    /// has not seen live in the last 10 minutes, from public-port callers of any address
    /// (default 100; 0 = off): caps what many addresses together cost (docs/abuse.md).
    #[serde(default = "defaults::auth_lookup_budget")]
    pub auth_lookup_budget: u32,
    /// `AUTH_NEGATIVE_TTL_MS`: how long an unknown API key is remembered as unknown (default
    /// 30,000; 0 = as long as `CACHE_TTL_MS`). A key created or imported elsewhere is refused
    /// on a replica that remembers it as unknown for at most this long.
    #[serde(default = "defaults::auth_negative_ttl_ms")]
    pub auth_negative_ttl_ms: u64,
    /// `UI_SESSION_IDLE_S`: seconds an admin-UI session may stay unused before it ends
    /// (default 1,200 = GES's 20 minutes; docs/admin-ui.md#sessions).
    #[serde(default = "defaults::ui_session_idle_s")]
    pub ui_session_idle_s: u64,
    /// `UI_COOKIE_SECURE`: mark the admin-UI session cookie `Secure` (set it when the internal
    /// port is reached over TLS; a request with `X-Forwarded-Proto: https` gets it anyway).
    #[serde(default)]
    pub ui_cookie_secure: bool,
    /// Set by the AWS Lambda runtime on every invocation host (never set it yourself): when
    /// present, function binaries answer Lambda invocations instead of listening on `PORT`.
    #[serde(default)]
    pub aws_lambda_runtime_api: Option<String>,
}

/// The proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`), parsed once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 192.168.1.7, fd00::/8`: CIDRs or single addresses, comma-separated.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = match item.parse::<ipnet::IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => item
                    .parse::<std::net::IpAddr>()
                    .map(ipnet::IpNet::from)
                    .map_err(|_| {
                        format!(
                            "TRUSTED_PROXIES: {item:?} is neither an IP address nor a CIDR \
                             (e.g. 10.0.0.0/8)"
                        )
                    })?,
            };
            nets.push(net);
        }
        Ok(Self(nets))
    }

    /// Whether `addr` is one of the trusted proxies (IPv4-mapped IPv6 compared as IPv4).
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.0.iter().any(|net| net.contains(&addr))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl HttpConfig {
    /// Whether this process runs on AWS Lambda (read once with the rest of the configuration).
    pub fn on_lambda(&self) -> bool {
        self.aws_lambda_runtime_api.is_some()
    }
}

/// The GWS statistics proxy and EWT mode3 (docs/statistics.md): how long a call to a
/// tenant's GWS may take, how large its bodies may be, how long its answers are cached.
#[derive(Debug, Clone, Deserialize)]
pub struct GwsConfig {
    /// `GWS_TIMEOUT_MS`: the longest one call to GWS (token or statistics) may take, in ms
    /// (default 3,000; 100–20,000). A request makes at most three (docs/statistics.md).
    #[serde(default = "defaults::gws_timeout_ms")]
    pub gws_timeout_ms: u64,
    /// `GWS_MAX_BODY_BYTES`: the largest statistics request body accepted (413 above it) and
    /// the largest GWS answer read (503 above it), in bytes (default 262,144).
    #[serde(default = "defaults::gws_max_body_bytes")]
    pub gws_max_body_bytes: usize,
    /// `GWS_CACHE_TTL_S`: how long a GWS answer is cached in the service Redis, in seconds
    /// (default 300, GES's 5 minutes; 15–3,600).
    #[serde(default = "defaults::gws_cache_ttl_s")]
    pub gws_cache_ttl_s: u64,
}

/// Logging settings (`LOG_LEVEL`, `LOG_MAX_LEN`, `LOG_FORMAT`).
#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    /// TRACE, DEBUG, INFO, WARN, ERROR (FATAL is read as ERROR), or an `EnvFilter` directive.
    #[serde(rename = "log_level", default = "defaults::log_level")]
    pub level: String,
    /// Bytes after which a log line is cut.
    #[serde(rename = "log_max_len", default = "defaults::log_max_len")]
    pub max_len: usize,
    /// `json` (default) or `text`.
    #[serde(rename = "log_format", default = "defaults::log_format")]
    pub format: String,
}

/// Dispatcher settings (`WORKER_*`).
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerConfig {
    /// Most callbacks claimed in one batch.
    #[serde(rename = "worker_batch", default = "defaults::worker_batch")]
    pub batch: usize,
    /// Lease of a claimed batch; a dead worker's claims are taken over after it.
    #[serde(rename = "worker_lease_ms", default = "defaults::worker_lease_ms")]
    pub lease_ms: u64,
    /// Tenant-wide cap on submissions per second (0 = none).
    #[serde(
        rename = "worker_tenant_rate",
        default = "defaults::worker_tenant_rate"
    )]
    pub tenant_rate: u32,
    /// Port of the worker's `/health` and `/metrics`.
    #[serde(rename = "worker_port", default = "defaults::worker_port")]
    pub port: u16,
    /// Safety poll of the idle path, seconds (the worker otherwise sleeps until the next due time).
    #[serde(
        rename = "worker_safety_poll_s",
        default = "defaults::worker_safety_poll_s"
    )]
    pub safety_poll_s: u64,
    /// How long the wake-up subscription may stay silent before the worker checks the node
    /// still answers (`PING`, within `REDIS_TIMEOUT_MS`), seconds; a node that does not is left
    /// for the next one of `REDIS_URL` (docs/derived-state.md#wake-ups).
    #[serde(
        rename = "worker_wake_ping_s",
        default = "defaults::worker_wake_ping_s"
    )]
    pub wake_ping_s: u64,
    /// The longest silence between liveness `PING`s once the subscription has been quiet for
    /// a while: after each `PING` with no message since, the wait doubles from
    /// `WORKER_WAKE_PING_S` up to this (no back-off when it is not above that), and any
    /// message brings it back (the idle cost, worker/README.md#idle-cost;
    /// docs/derived-state.md#wake-ups), seconds.
    #[serde(
        rename = "worker_wake_ping_idle_s",
        default = "defaults::worker_wake_ping_idle_s"
    )]
    pub wake_ping_idle_s: u64,
    /// How often the reconciler checks that no part of the service Redis was lost (marker key,
    /// and per node: restart, evictions, flushes), seconds. 1 + one command per node per check.
    #[serde(
        rename = "worker_reconcile_check_s",
        default = "defaults::worker_reconcile_check_s"
    )]
    pub reconcile_check_s: u64,
    /// Cadence of the PostgreSQL sweep (overdue callbacks missing from the schedule index,
    /// queue views of services that changed), seconds. No Redis command when it finds nothing.
    #[serde(rename = "worker_sweep_s", default = "defaults::worker_sweep_s")]
    pub sweep_s: u64,
    /// How long past its dispatch time an unsubmitted callback must be before the sweep
    /// re-indexes it, seconds (paced callbacks wait legitimately).
    #[serde(
        rename = "worker_sweep_grace_s",
        default = "defaults::worker_sweep_grace_s"
    )]
    pub sweep_grace_s: u64,
    /// Cadence of the PostgreSQL-side passes (control outbox, TTL expiry, gauges), seconds.
    #[serde(
        rename = "worker_maintenance_s",
        default = "defaults::worker_maintenance_s"
    )]
    pub maintenance_s: u64,
    /// Days after the desired time a callback and its events are deleted.
    #[serde(
        rename = "worker_retention_days",
        default = "defaults::worker_retention_days"
    )]
    pub retention_days: u32,
    /// Cadence of the retention purge, seconds.
    #[serde(
        rename = "worker_retention_interval_s",
        default = "defaults::worker_retention_interval_s"
    )]
    pub retention_interval_s: u64,
    /// Stream entries older than this are trimmed (`XADD … MINID ~`), seconds; 0 = never trim.
    /// Keep it well above the voice platform's worst consumer lag.
    #[serde(
        rename = "worker_stream_horizon_s",
        default = "defaults::worker_stream_horizon_s"
    )]
    pub stream_horizon_s: u64,
}

/// Keys of the per-tenant credentials vault (docs/credentials.md#configuration).
#[derive(Debug, Clone, Deserialize)]
pub struct CredentialsConfig {
    /// `CREDENTIALS_KEY` (secret file `CREDENTIALS-KEY`): the base64 of 32 random bytes; every
    /// record is sealed under it. Unset: the vault is not configured (no credentials are read,
    /// writes answer 503).
    #[serde(rename = "credentials_key", default)]
    pub key: Option<SecretString>,
    /// `CREDENTIALS_KEYS_RETIRED`: comma-separated older keys, still accepted for decryption
    /// until `engage credentials rotate` has re-sealed every record under the current key.
    #[serde(rename = "credentials_keys_retired", default)]
    pub keys_retired: Option<SecretString>,
}

/// CAPTCHA verification of creates (docs/credentials.md#captcha).
#[derive(Debug, Clone, Deserialize)]
pub struct CaptchaConfig {
    /// `CAPTCHA_VERIFY_URL`: the reCAPTCHA-compatible `siteverify` endpoint.
    #[serde(
        rename = "captcha_verify_url",
        default = "defaults::captcha_verify_url"
    )]
    pub verify_url: String,
    /// `CAPTCHA_TIMEOUT_MS`: how long a create waits for `siteverify` before answering 503
    /// (100–60,000; the request's deadline, `REQUEST_TIMEOUT_MS`, bounds it too).
    #[serde(
        rename = "captcha_timeout_ms",
        default = "defaults::captcha_timeout_ms"
    )]
    pub timeout_ms: u64,
}

/// Push notifications (`FCM_*`, `PUSH_*`, docs/push.md#configuration).
#[derive(Debug, Clone, Deserialize)]
pub struct PushConfig {
    /// Base URL of FCM HTTP v1 (`{FCM_URL}/v1/projects/{project}/messages:send`).
    #[serde(rename = "fcm_url", default = "defaults::fcm_url")]
    pub fcm_url: String,
    /// Timeout of each request to FCM or the token endpoint, ms.
    #[serde(rename = "fcm_timeout_ms", default = "defaults::fcm_timeout_ms")]
    pub fcm_timeout_ms: u64,
    /// Cadence of the `CALLBACK_UPCOMING` watcher, ms.
    #[serde(rename = "push_watch_ms", default = "defaults::push_watch_ms")]
    pub watch_ms: u64,
    /// Cadence of the outbox sender, ms.
    #[serde(rename = "push_send_ms", default = "defaults::push_send_ms")]
    pub send_ms: u64,
    /// First retry delay of a message, ms (doubling, at most 5 minutes).
    #[serde(rename = "push_backoff_ms", default = "defaults::push_backoff_ms")]
    pub backoff_ms: u64,
    /// Tries of one message before it is given up.
    #[serde(rename = "push_max_tries", default = "defaults::push_max_tries")]
    pub max_tries: u32,
}

impl PushConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.fcm_url.trim();
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .map(|rest| rest.split(['/', ':']).next().unwrap_or(""));
        if host.is_none_or(str::is_empty) {
            return bad("FCM_URL must be an http:// or https:// URL with a host");
        }
        if !(100..=60_000).contains(&self.fcm_timeout_ms) {
            return bad("FCM_TIMEOUT_MS must be between 100 and 60000");
        }
        if !(50..=600_000).contains(&self.watch_ms) || !(50..=600_000).contains(&self.send_ms) {
            return bad("PUSH_WATCH_MS and PUSH_SEND_MS must be between 50 and 600000");
        }
        if !(10..=300_000).contains(&self.backoff_ms) || !(1..=100).contains(&self.max_tries) {
            return bad(
                "PUSH_BACKOFF_MS must be between 10 and 300000, PUSH_MAX_TRIES between 1 and 100",
            );
        }
        Ok(())
    }
}

mod defaults {
    pub(super) fn fcm_url() -> String {
        "https://fcm.googleapis.com".into()
    }
    pub(super) fn fcm_timeout_ms() -> u64 {
        5_000
    }
    pub(super) fn push_watch_ms() -> u64 {
        5_000
    }
    pub(super) fn push_send_ms() -> u64 {
        1_000
    }
    pub(super) fn push_backoff_ms() -> u64 {
        1_000
    }
    pub(super) fn push_max_tries() -> u32 {
        8
    }
    pub(super) fn captcha_verify_url() -> String {
        "https://www.google.com/recaptcha/api/siteverify".into()
    }
    pub(super) fn captcha_timeout_ms() -> u64 {
        3_000
    }
    pub(super) fn gws_timeout_ms() -> u64 {
        3_000
    }
    pub(super) fn gws_max_body_bytes() -> usize {
        256 * 1024
    }
    pub(super) fn gws_cache_ttl_s() -> u64 {
        300
    }
    pub(super) fn db_pool_size() -> usize {
        8
    }
    pub(super) fn db_pool_timeout_ms() -> u64 {
        3_000
    }
    pub(super) fn db_connect_timeout_ms() -> u64 {
        3_000
    }
    pub(super) fn db_lock_timeout_ms() -> u64 {
        5_000
    }
    pub(super) fn db_idle_in_tx_timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn db_batch_in_flight() -> usize {
        4
    }
    pub(super) fn cache_ttl_ms() -> u64 {
        2_000
    }
    pub(super) fn auth_failure_limit() -> u32 {
        30
    }
    pub(super) fn auth_lookup_budget() -> u32 {
        100
    }
    pub(super) fn auth_negative_ttl_ms() -> u64 {
        30_000
    }
    pub(super) fn redis_url() -> String {
        "redis://127.0.0.1:6379".into()
    }
    pub(super) fn redis_prefix() -> String {
        "engage".into()
    }
    pub(super) fn redis_schedule_shards() -> u16 {
        4
    }
    pub(super) fn redis_schedule_horizon_s() -> u32 {
        600
    }
    pub(super) fn redis_timeout_ms() -> u64 {
        500
    }
    pub(super) fn voice_redis_ack_timeout_ms() -> u64 {
        250
    }
    pub(super) fn voice_stream() -> String {
        "NewCallbackStream".into()
    }
    pub(super) fn control_stream() -> String {
        "CallbackControlStream".into()
    }
    pub(super) fn ges_url() -> String {
        "http://127.0.0.1:3050".into()
    }
    pub(super) fn port() -> u16 {
        8080
    }
    pub(super) fn internal_port() -> u16 {
        3050
    }
    pub(super) fn external_port() -> u16 {
        3005
    }
    pub(super) fn metrics_port() -> u16 {
        9090
    }
    pub(super) fn external_body_limit() -> usize {
        500 * 1024
    }
    pub(super) fn internal_body_limit() -> usize {
        10 * 1024 * 1024
    }
    pub(super) fn request_timeout_ms() -> u64 {
        15_000
    }
    pub(super) fn header_read_timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn shutdown_grace_ms() -> u64 {
        10_000
    }
    pub(super) fn api_key_rate_per_second() -> u32 {
        1_000
    }
    pub(super) fn api_key_burst() -> u32 {
        2_000
    }
    pub(super) fn cors_cache_seconds() -> u64 {
        10
    }
    pub(super) fn ui_session_idle_s() -> u64 {
        1_200
    }
    pub(super) fn ewt_agent_activity_window_s() -> u64 {
        600
    }
    pub(super) fn health_refresh_s() -> u64 {
        60
    }
    pub(super) fn throttle_reseed_seconds() -> u32 {
        300
    }
    pub(super) fn log_level() -> String {
        "INFO".into()
    }
    pub(super) fn log_max_len() -> usize {
        2048
    }
    pub(super) fn log_format() -> String {
        "json".into()
    }
    pub(super) fn worker_batch() -> usize {
        150
    }
    pub(super) fn worker_lease_ms() -> u64 {
        15_000
    }
    pub(super) fn worker_tenant_rate() -> u32 {
        500
    }
    pub(super) fn worker_port() -> u16 {
        9091
    }
    pub(super) fn worker_safety_poll_s() -> u64 {
        120
    }
    pub(super) fn worker_wake_ping_s() -> u64 {
        2
    }
    pub(super) fn worker_wake_ping_idle_s() -> u64 {
        30
    }
    pub(super) fn worker_reconcile_check_s() -> u64 {
        40
    }
    pub(super) fn worker_sweep_s() -> u64 {
        15
    }
    pub(super) fn worker_sweep_grace_s() -> u64 {
        10
    }
    pub(super) fn worker_maintenance_s() -> u64 {
        5
    }
    pub(super) fn worker_retention_days() -> u32 {
        14
    }
    pub(super) fn worker_retention_interval_s() -> u64 {
        600
    }
    pub(super) fn worker_stream_horizon_s() -> u64 {
        3 * 86_400
    }
}

impl Config {
    /// Reads the process environment plus the secret folders, then validates.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Builds the configuration from explicit variables (plus the secret folders they name).
    /// Tests use this instead of mutating the process environment.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::from_source(source_with_folders(vars)?)
    }

    /// Builds and validates the configuration from the merged variables.
    pub(crate) fn from_source(source: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut cfg = Config {
            db: DbConfig::from_source(&source)?,
            redis: area("redis", &source)?,
            voice: area("voice", &source)?,
            http: area("http", &source)?,
            log: area("log", &source)?,
            worker: area("worker", &source)?,
            push: area("push", &source)?,
            credentials: area("credentials", &source)?,
            captcha: area("captcha", &source)?,
            gws: area("gws", &source)?,
        };
        cfg.validate()?;
        cfg.resolve_redis_tls()?;
        Ok(cfg)
    }

    /// For binaries serving the voice-platform events route: refuses to start without
    /// `ORS_EVENTS_TOKEN` (the route fails closed, like the admin API).
    pub fn require_ors_events_token(&self) -> Result<(), ConfigError> {
        if self.http.ors_events_token.is_none() {
            return Err(ConfigError(
                "ORS_EVENTS_TOKEN is required: the voice platform authenticates its state events \
                 with it (set a random value of at least 16 characters, the same for the voice platform)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A replica `WAIT` runs on a connection with `REDIS_TIMEOUT_MS` as its response timeout:
    /// a wait as long as that would be cut off by the client, leaving its outcome unknown
    /// (docs/voice-platform.md#failover). Half leaves room for one call queued behind it.
    fn check_ack_timeout(&self) -> Result<(), ConfigError> {
        if self.voice.replica_acks > 0 && self.voice.ack_timeout_ms * 2 > self.redis.timeout_ms {
            return bad(format!(
                "VOICE_REDIS_ACK_TIMEOUT_MS ({}) must be at most half of REDIS_TIMEOUT_MS ({})",
                self.voice.ack_timeout_ms, self.redis.timeout_ms
            ));
        }
        Ok(())
    }

    /// Checks every area; the first problem found names its variable.
    fn validate(&self) -> Result<(), ConfigError> {
        self.db.validate()?;
        self.redis.validate()?;
        self.voice.validate()?;
        self.check_ack_timeout()?;
        self.http.validate()?;
        self.log.validate()?;
        self.worker.validate()?;
        self.check_horizon()?;
        self.push.validate()?;
        self.credentials.validate()?;
        self.captcha.validate()?;
        self.gws.validate()
    }
}

impl Config {
    /// The horizon loader runs once per sweep round: a horizon shorter than two rounds could
    /// let a callback come due before it is loaded.
    fn check_horizon(&self) -> Result<(), ConfigError> {
        let h = u64::from(self.redis.schedule_horizon_s);
        if h != 0 && h < 2 * self.worker.sweep_s {
            return bad(
                "REDIS_SCHEDULE_HORIZON_S must be 0 (off) or at least twice WORKER_SWEEP_S",
            );
        }
        Ok(())
    }
}

/// `Err` with a message naming the variable to fix.
fn bad(m: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError(m.into()))
}

/// A shared secret (`ADMIN_TOKEN`, `ORS_EVENTS_TOKEN`): at least 16 characters, unpadded.
fn check_token(name: &str, token: Option<&SecretString>) -> Result<(), ConfigError> {
    if let Some(token) = token
        && (token.expose_secret().trim().len() < 16
            || token.expose_secret().trim() != token.expose_secret())
    {
        return bad(format!(
            "{name} must be at least 16 characters, without leading or trailing spaces"
        ));
    }
    Ok(())
}

/// Each entry of a comma-separated list of Redis URLs parses.
fn check_redis_urls(name: &str, urls: &str) -> Result<(), ConfigError> {
    for url in urls.split(',') {
        if redis::parse_redis_url(url.trim()).is_none() {
            return bad(format!("{name} is not a valid Redis URL: {url:?}"));
        }
    }
    Ok(())
}

impl DbConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = self.pg_config() {
            return bad(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"));
        }
        if self.pool_size == 0 {
            return bad("DB_POOL_SIZE must be at least 1");
        }
        if let Some(schema) = &self.schema
            && !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad("DB_SCHEMA may hold only letters, digits and '_'");
        }
        Ok(())
    }
}

impl RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_redis_urls("REDIS_URL", &self.url)?;
        if self.schedule_shards == 0 || self.schedule_shards > 1024 {
            return bad("REDIS_SCHEDULE_SHARDS must be between 1 and 1024");
        }
        if self.schedule_shards_old > 1024 {
            return bad("REDIS_SCHEDULE_SHARDS_OLD must be between 0 and 1024");
        }
        if self.prefix.contains(['{', '}', ' ']) {
            return bad("REDIS_PREFIX may not contain braces or spaces");
        }
        if self.schedule_horizon_s != 0 && !(10..=604_800).contains(&self.schedule_horizon_s) {
            return bad("REDIS_SCHEDULE_HORIZON_S must be 0 (off) or between 10 and 604800");
        }
        if self.throttle_reseed_seconds < 10 || self.throttle_reseed_seconds > 86_400 {
            return bad("THROTTLE_RESEED_SECONDS must be between 10 and 86400");
        }
        Ok(())
    }
}

impl VoiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis_url {
            check_redis_urls("VOICE_REDIS_URL", url)?;
        }
        if self.stream.is_empty() || self.control_stream.is_empty() {
            return bad("VOICE_STREAM and CONTROL_STREAM may not be empty");
        }
        if self.replica_acks > 0 && !(10..=5_000).contains(&self.ack_timeout_ms) {
            return bad("VOICE_REDIS_ACK_TIMEOUT_MS must be between 10 and 5000");
        }
        check_ges_url(&self.ges_url)
    }
}

/// `GES_URL` is the base of every stream entry's `events_url`, which the voice platform
/// refuses unless it is http(s) (docs/voice-platform.md#stream-entries): checked at start
/// rather than discovered as callbacks that are never played.
fn check_ges_url(url: &str) -> Result<(), ConfigError> {
    let lower = url.to_ascii_lowercase();
    let host = ["http://", "https://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme));
    match host {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && url.trim() == url => Ok(()),
        _ => bad(
            "GES_URL must be an http:// or https:// URL with a host (the base of the events_url \
             the voice platform posts to), e.g. http://engage-internal:3050",
        ),
    }
}

impl GwsConfig {
    /// How long one call to GWS may take: `GWS_TIMEOUT_MS`, but never more than a quarter of
    /// the request's deadline, since a request makes up to three calls (token, statistics,
    /// the retry after a 401) and should answer its own 503 before the deadline's.
    pub fn call_timeout(&self, request_timeout_ms: u64) -> Duration {
        Duration::from_millis(self.gws_timeout_ms.min(request_timeout_ms / 4).max(1))
    }

    /// Ranges. (The calls of one request also share its deadline: [`GwsConfig::call_timeout`].)
    fn validate(&self) -> Result<(), ConfigError> {
        if !(100..=20_000).contains(&self.gws_timeout_ms) {
            return bad("GWS_TIMEOUT_MS must be between 100 and 20000");
        }
        if !(1_024..=16 * 1024 * 1024).contains(&self.gws_max_body_bytes) {
            return bad("GWS_MAX_BODY_BYTES must be between 1024 and 16777216");
        }
        if !(15..=3_600).contains(&self.gws_cache_ttl_s) {
            return bad("GWS_CACHE_TTL_S must be between 15 and 3600");
        }
        Ok(())
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_token("ADMIN_TOKEN", self.admin_token.as_ref())?;
        check_token("ORS_EVENTS_TOKEN", self.ors_events_token.as_ref())?;
        if self.external_body_limit == 0 || self.internal_body_limit == 0 {
            return bad("EXTERNAL_BODY_LIMIT and INTERNAL_BODY_LIMIT must be positive");
        }
        if !(100..=600_000).contains(&self.header_read_timeout_ms) {
            return bad("HEADER_READ_TIMEOUT_MS must be between 100 and 600000");
        }
        if self.api_key_rate_per_second > 0 && self.api_key_burst == 0 {
            return bad("API_KEY_BURST must be at least 1 when API_KEY_RATE_PER_SECOND is set");
        }
        if self.ewt_agent_activity_window_s == 0 || self.ewt_agent_activity_window_s > 7 * 86_400 {
            return bad("EWT_AGENT_ACTIVITY_WINDOW_S must be between 1 and 604800");
        }
        if !(5..=3_600).contains(&self.health_refresh_s) {
            return bad("HEALTH_REFRESH_S must be between 5 and 3600");
        }
        Ok(())
    }
}

impl LogConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if crate::telemetry::level_directive(&self.level).is_none() {
            return bad(format!(
                "LOG_LEVEL {:?} is not one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL",
                self.level
            ));
        }
        if !matches!(self.format.as_str(), "json" | "text") {
            return bad("LOG_FORMAT must be json or text");
        }
        if self.max_len < 256 {
            return bad("LOG_MAX_LEN must be at least 256");
        }
        Ok(())
    }
}

impl WorkerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.batch == 0 || self.batch > 150 {
            return bad("WORKER_BATCH must be between 1 and 150");
        }
        if self.lease_ms < 1_000 {
            return bad("WORKER_LEASE_MS must be at least 1000");
        }
        if self.safety_poll_s < 30 {
            return bad("WORKER_SAFETY_POLL_S must be at least 30 (the idle path must stay quiet)");
        }
        if !(1..=30).contains(&self.wake_ping_s) {
            return bad("WORKER_WAKE_PING_S must be between 1 and 30");
        }
        if !(1..=60).contains(&self.wake_ping_idle_s) {
            return bad("WORKER_WAKE_PING_IDLE_S must be between 1 and 60");
        }
        if self.maintenance_s == 0 || self.retention_interval_s == 0 {
            return bad("WORKER_MAINTENANCE_S and WORKER_RETENTION_INTERVAL_S must be positive");
        }
        if self.sweep_s == 0
            || self.sweep_grace_s == 0
            || self.sweep_s + self.sweep_grace_s > 50
            || !(1..=50).contains(&self.reconcile_check_s)
        {
            return bad(
                "WORKER_SWEEP_S and WORKER_SWEEP_GRACE_S must be positive with a sum of at most 50, \
                 WORKER_RECONCILE_CHECK_S between 1 and 50 (a committed callback reaches the voice \
                 stream, and a Redis loss is repaired, within a minute)",
            );
        }
        if self.retention_days == 0 {
            return bad("WORKER_RETENTION_DAYS must be at least 1");
        }
        Ok(())
    }
}

impl CredentialsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match &self.key {
            Some(key) => crate::credentials::Keys::parse(key, self.keys_retired.as_ref())
                .map(|_| ())
                .map_err(ConfigError),
            None if self
                .keys_retired
                .as_ref()
                .is_some_and(|r| !r.expose_secret().trim().is_empty()) =>
            {
                bad(
                    "CREDENTIALS_KEYS_RETIRED is set without CREDENTIALS_KEY: set the current key \
                     too (docs/credentials.md#rotation)",
                )
            }
            None => Ok(()),
        }
    }
}

impl CaptchaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !crate::credentials::records::is_http_url(&self.verify_url) {
            return bad("CAPTCHA_VERIFY_URL must be an http:// or https:// URL with a host");
        }
        // The request's own deadline (REQUEST_TIMEOUT_MS) bounds the call too.
        if !(100..=60_000).contains(&self.timeout_ms) {
            return bad("CAPTCHA_TIMEOUT_MS must be between 100 and 60000");
        }
        Ok(())
    }
}

impl DbConfig {
    /// Only the PostgreSQL settings of `vars` (plus their secret folders), with the TLS
    /// settings read; the other areas are neither read nor validated (the test harness).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::from_source(&source_with_folders(vars)?)
    }

    fn from_source(source: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut db: DbConfig = area("database", source)?;
        db.tls = crate::db::tls::DbTls::from_settings(
            db.url.expose_secret(),
            db.tls_ca_file.as_deref(),
            db.ca_cert.as_deref(),
        )
        .map_err(ConfigError)?;
        Ok(db)
    }

    /// The parsed connection settings, with `DB_USER` / `DB_PASSWORD` applied and the
    /// `sslmode` of [`Self::tls`] (the URL's TLS parameters are read by [`crate::db::tls`]).
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
        let url = crate::db::tls::without_tls_params(self.url.expose_secret());
        let mut pg: tokio_postgres::Config = url.parse()?;
        pg.ssl_mode(self.tls.mode.wire());
        if let Some(user) = &self.user {
            pg.user(user);
        }
        if let Some(password) = &self.password {
            pg.password(password.expose_secret());
        }
        pg.connect_timeout(Duration::from_millis(self.connect_timeout_ms));
        // A server that vanished (host down, network cut) is noticed in about 25 s instead of
        // the system's 2 h, so writes given up by their request are resolved and their
        // connections freed (docs/bounded-answers.md). A merely frozen server still answers
        // keepalives: its connections wait for it.
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        pg.application_name("engage");
        Ok(pg)
    }
}

impl VoiceConfig {
    /// The voice Redis URL(s): explicit, else built from the secret's server name and port,
    /// else the service Redis.
    pub fn url<'a>(&'a self, service_redis: &'a RedisConfig) -> std::borrow::Cow<'a, str> {
        if let Some(url) = &self.redis_url {
            return url.as_str().into();
        }
        if let Some(host) = &self.redis_servername {
            let scheme = if self.secret_tls() { "rediss" } else { "redis" };
            return format!("{scheme}://{host}:{}", self.redis_port.unwrap_or(6379)).into();
        }
        service_redis.url.as_str().into()
    }
}

impl VoiceConfig {
    /// Whether the URL built from the secret uses TLS: `VOICE_REDIS_TLS` (the secret's `tls`)
    /// when set, else whether the secret carries `rejectUnauthorized`, a TLS-only option GES
    /// passes to its TLS connection (docs/tls.md#redis).
    pub fn secret_tls(&self) -> bool {
        self.redis_tls
            .unwrap_or(self.redis_reject_unauthorized.is_some())
    }

    /// Whether the voice Redis has settings of its own (else it is the service Redis).
    pub fn own_redis(&self) -> bool {
        self.redis_url.is_some() || self.redis_servername.is_some()
    }
}

impl Config {
    /// Reads the CA bundles and checks them against the URLs' schemes (docs/tls.md#redis).
    fn resolve_redis_tls(&mut self) -> Result<(), ConfigError> {
        let r = &self.redis;
        let ca = load_ca(r.tls_ca_file.as_deref(), r.tls_ca.as_deref(), "REDIS")?;
        check_tls_scheme(
            &r.url,
            "REDIS_URL",
            ca.is_some().then_some("REDIS_TLS_CA_FILE"),
        )?;
        self.redis.tls = RedisTls {
            ca_pem: ca,
            ca_var: "REDIS_TLS_CA_FILE",
            url_var: "REDIS_URL",
            insecure: false,
        };
        let v = &self.voice;
        let ca = load_ca(
            v.redis_tls_ca_file.as_deref(),
            v.redis_tls_ca.as_deref(),
            "VOICE_REDIS",
        )?;
        let url_var = match (&v.redis_url, &v.redis_servername) {
            (Some(_), _) => "VOICE_REDIS_URL",
            (None, Some(_)) => "VOICE_REDIS_SERVERNAME",
            (None, None) => "REDIS_URL",
        };
        if !v.own_redis() && ca.is_some() {
            return Err(ConfigError(
                "VOICE_REDIS_TLS_CA_FILE is set but the voice Redis is the service Redis (no \
                 VOICE_REDIS_URL or voice-redis-ors-stream secret): set REDIS_TLS_CA_FILE instead"
                    .into(),
            ));
        }
        if v.redis_url.is_some() && v.redis_tls.is_some() {
            return Err(ConfigError(
                "VOICE_REDIS_TLS applies to the URL built from the voice-redis-ors-stream secret; \
                 VOICE_REDIS_URL says TLS by its scheme (rediss://)"
                    .into(),
            ));
        }
        let url = v.url(&self.redis).into_owned();
        check_tls_scheme(
            &url,
            url_var,
            ca.is_some().then_some("VOICE_REDIS_TLS_CA_FILE"),
        )?;
        self.voice.tls = RedisTls {
            ca_pem: ca,
            ca_var: "VOICE_REDIS_TLS_CA_FILE",
            url_var,
            insecure: v.own_redis() && v.redis_reject_unauthorized == Some(false),
        };
        Ok(())
    }
}

/// The CA bundle of one Redis role (`{role}_TLS_CA_FILE` or `{role}_TLS_CA`), checked to hold
/// certificates.
fn load_ca(
    file: Option<&Path>,
    inline: Option<&str>,
    role: &str,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let (pem, what) = match (file, inline) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(format!(
                "{role}_TLS_CA_FILE and {role}_TLS_CA are both set: give the CA once"
            )));
        }
        (Some(path), None) => {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError(format!("{role}_TLS_CA_FILE: cannot read {path:?}: {e}"))
            })?;
            (pem, format!("{role}_TLS_CA_FILE ({path:?})"))
        }
        (None, Some(text)) => (text.as_bytes().to_vec(), format!("{role}_TLS_CA")),
        (None, None) => return Ok(None),
    };
    crate::redis::tls::parse_ca(&pem, &what)
        .map(Some)
        .map_err(ConfigError)
}

/// The items of a comma-separated list, trimmed, blanks dropped (`" a, ,b "` → `["a", "b"]`).
pub fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every node of a URL list speaks TLS or none does; a CA needs `rediss://`.
fn check_tls_scheme(urls: &str, var: &str, ca_var: Option<&str>) -> Result<(), ConfigError> {
    let tls = urls
        .split(',')
        .filter(|u| crate::redis::tls::is_tls_url(u))
        .count();
    let all = urls.split(',').count();
    if tls != 0 && tls != all {
        return Err(ConfigError(format!(
            "{var} mixes rediss:// and redis:// nodes: use one scheme for every node"
        )));
    }
    if let (0, Some(ca_var)) = (tls, ca_var) {
        return Err(ConfigError(format!(
            "{ca_var} is set but {var} is not a rediss:// (TLS) URL"
        )));
    }
    Ok(())
}

/// The variables, overridden by the secret files of the folders in `CONFIG_FOLDERS`.
pub(crate) fn source_with_folders(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut source: BTreeMap<String, String> = vars.into_iter().collect();
    if let Some(folders) = source.get("CONFIG_FOLDERS").cloned() {
        for folder in folders.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            overlay_secret_folder(Path::new(folder), &mut source)?;
        }
    }
    Ok(source)
}

fn area<T: serde::de::DeserializeOwned>(
    name: &str,
    source: &BTreeMap<String, String>,
) -> Result<T, ConfigError> {
    envy::from_iter(source.iter().map(|(k, v)| (k.clone(), v.clone()))).map_err(|e| {
        let msg = match e {
            envy::Error::MissingValue(field) => {
                format!("{} is required ({name} settings)", field.to_uppercase())
            }
            envy::Error::Custom(msg) => format!("{name} settings: {msg}"),
        };
        ConfigError(msg)
    })
}

/// Reads every regular file of a secret folder into `source`, overriding environment values.
fn overlay_secret_folder(
    folder: &Path,
    source: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        // A folder listed but not mounted (e.g. no GWS secret) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ConfigError(format!(
                "CONFIG_FOLDERS: cannot read {folder:?}: {e}"
            )));
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Kubernetes secret mounts carry `..data` symlink folders; skip hidden entries.
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        let value = std::fs::read_to_string(entry.path())
            .map_err(|e| ConfigError(format!("CONFIG_FOLDERS: cannot read secret {name}: {e}")))?;
        overlay_secret(&name, value.trim_end_matches(['\n', '\r']), source)?;
    }
    Ok(())
}

/// Applies one named secret (a secret file, or a key of an AWS secret): `DB-PASSWORD` sets
/// `DB_PASSWORD`; `voice-redis-ors-stream` is JSON expanded to `VOICE_REDIS_*`.
pub(crate) fn overlay_secret(
    name: &str,
    value: &str,
    source: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    if name == "voice-redis-ors-stream" {
        overlay_voice_secret(value, source)
    } else {
        source.insert(name.replace('-', "_").to_uppercase(), value.to_string());
        Ok(())
    }
}

/// Expands the `voice-redis-ors-stream` JSON secret (`{"password","port","servername",...}`).
fn overlay_voice_secret(
    json: &str,
    source: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| {
            ConfigError(format!(
                "secret voice-redis-ors-stream is not a JSON object: {e}"
            ))
        })?;
    for (field, var) in [
        ("password", "VOICE_REDIS_PASSWORD"),
        ("port", "VOICE_REDIS_PORT"),
        ("servername", "VOICE_REDIS_SERVERNAME"),
        ("rejectUnauthorized", "VOICE_REDIS_REJECT_UNAUTHORIZED"),
        ("tls", "VOICE_REDIS_TLS"),
    ] {
        let flag = var.ends_with("_TLS") || var.ends_with("UNAUTHORIZED");
        match obj.get(field) {
            // `"true"`, `"False"` and `true` alike: JSON secrets carry flags either way.
            Some(serde_json::Value::String(s)) if flag => {
                source.insert(var.into(), s.trim().to_ascii_lowercase());
            }
            Some(serde_json::Value::String(s)) => {
                source.insert(var.into(), s.clone());
            }
            Some(serde_json::Value::Number(n)) => {
                source.insert(var.into(), n.to_string());
            }
            Some(serde_json::Value::Bool(b)) => {
                source.insert(var.into(), b.to_string());
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_and_database_url_is_required() {
        let err = Config::from_vars(vars(&[])).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL is required"), "{err}");
        let cfg =
            Config::from_vars(vars(&[("DATABASE_URL", "postgres://u@localhost/db")])).unwrap();
        assert_eq!(cfg.http.internal_port, 3050);
        assert_eq!(cfg.http.external_port, 3005);
        assert_eq!(cfg.http.external_body_limit, 512_000);
        assert_eq!(cfg.voice.stream, "NewCallbackStream");
        assert_eq!(cfg.log.max_len, 2048);
    }

    /// Field names drop their area's prefix; the variables keep theirs. Every variable is set
    /// to a value other than its default and must land in its field.
    #[test]
    fn every_variable_maps_to_its_field() {
        let cfg = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u@h/d"),
            ("DB_USER", "dbu"),
            ("DB_PASSWORD", "dbp"),
            ("DB_POOL_SIZE", "3"),
            ("DB_POOL_TIMEOUT_MS", "11"),
            ("DB_CONNECT_TIMEOUT_MS", "12"),
            ("DB_LOCK_TIMEOUT_MS", "13"),
            ("DB_IDLE_IN_TX_TIMEOUT_MS", "14"),
            ("DB_SCHEMA", "s1"),
            ("DB_BATCH_IN_FLIGHT", "2"),
            ("CACHE_TTL_MS", "15"),
            ("REDIS_URL", "redis://r:1"),
            ("REDIS_CLUSTER", "true"),
            ("REDIS_CACHEKEY", "rp"),
            ("REDIS_PREFIX", "px"),
            ("REDIS_SCHEDULE_SHARDS", "7"),
            ("REDIS_TIMEOUT_MS", "16"),
            ("THROTTLE_RESEED_SECONDS", "17"),
            ("VOICE_REDIS_URL", "redis://v:2"),
            ("VOICE_REDIS_CLUSTER", "true"),
            ("VOICE_REDIS_PASSWORD", "vp"),
            ("VOICE_REDIS_SERVERNAME", "vs"),
            ("VOICE_REDIS_PORT", "18"),
            ("VOICE_STREAM", "vstream"),
            ("CONTROL_STREAM", "cstream"),
            ("GES_URL", "http://g"),
            ("LOG_LEVEL", "WARN"),
            ("LOG_MAX_LEN", "300"),
            ("LOG_FORMAT", "text"),
            ("WORKER_BATCH", "19"),
            ("WORKER_LEASE_MS", "2000"),
            ("WORKER_TENANT_RATE", "21"),
            ("WORKER_PORT", "22"),
            ("WORKER_SAFETY_POLL_S", "31"),
            ("WORKER_WAKE_PING_S", "7"),
            ("WORKER_WAKE_PING_IDLE_S", "32"),
            ("WORKER_RECONCILE_CHECK_S", "23"),
            ("WORKER_SWEEP_S", "24"),
            ("WORKER_SWEEP_GRACE_S", "25"),
            ("WORKER_MAINTENANCE_S", "26"),
            ("WORKER_RETENTION_DAYS", "27"),
            ("WORKER_RETENTION_INTERVAL_S", "28"),
            ("WORKER_STREAM_HORIZON_S", "29"),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ]))
        .unwrap();
        let (db, r, v, l, w) = (&cfg.db, &cfg.redis, &cfg.voice, &cfg.log, &cfg.worker);
        assert_eq!(db.url.expose_secret(), "postgres://u@h/d");
        assert_eq!(db.user.as_deref(), Some("dbu"));
        assert_eq!(db.password.as_ref().unwrap().expose_secret(), "dbp");
        let timeouts = (
            db.pool_timeout_ms,
            db.connect_timeout_ms,
            db.lock_timeout_ms,
        );
        assert_eq!(
            (db.pool_size, timeouts, db.idle_in_tx_timeout_ms),
            (3, (11, 12, 13), 14)
        );
        assert_eq!((db.schema.as_deref(), db.batch_in_flight), (Some("s1"), 2));
        assert_eq!(cfg.http.cache_ttl_ms, 15);
        assert_eq!(
            (r.url.as_str(), r.cluster, r.prefix.as_str()),
            ("redis://r:1", true, "px")
        );
        assert_eq!(r.password.as_ref().unwrap().expose_secret(), "rp");
        let redis = (r.schedule_shards, r.timeout_ms, r.throttle_reseed_seconds);
        assert_eq!(redis, (7, 16, 17));
        assert_eq!(
            (v.redis_url.as_deref(), v.redis_cluster),
            (Some("redis://v:2"), true)
        );
        assert_eq!(v.redis_password.as_ref().unwrap().expose_secret(), "vp");
        assert_eq!(
            (v.redis_servername.as_deref(), v.redis_port),
            (Some("vs"), Some(18))
        );
        let streams = (
            v.stream.as_str(),
            v.control_stream.as_str(),
            v.ges_url.as_str(),
        );
        assert_eq!(streams, ("vstream", "cstream", "http://g"));
        let log = (l.level.as_str(), l.max_len, l.format.as_str());
        assert_eq!(log, ("WARN", 300, "text"));
        let a = (w.batch, w.lease_ms, w.tenant_rate, w.port, w.safety_poll_s);
        assert_eq!(a, (19, 2000, 21, 22, 31));
        let b = (
            w.reconcile_check_s,
            w.sweep_s,
            w.sweep_grace_s,
            w.maintenance_s,
        );
        assert_eq!(b, (23, 24, 25, 26));
        let c = (w.retention_days, w.retention_interval_s, w.stream_horizon_s);
        assert_eq!(c, (27, 28, 29));
        assert_eq!((w.wake_ping_s, w.wake_ping_idle_s), (7, 32));
        assert!(cfg.http.on_lambda());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = Config::from_vars(vars(&[("DATABASE_URL", "postgres://u@h/d"), ("PORT", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PORT"), "{err}");
        let err = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u@h/d"),
            ("LOG_LEVEL", "LOUD"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("LOG_LEVEL"), "{err}");
        let err = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u@h/d"),
            ("ADMIN_TOKEN", "short"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ADMIN_TOKEN"), "{err}");
        let err = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u@h/d"),
            ("HEADER_READ_TIMEOUT_MS", "0"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("HEADER_READ_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn a_replica_wait_must_fit_in_the_redis_response_timeout() {
        let with = |ack: &str, timeout: &str| {
            Config::from_vars(vars(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("VOICE_REDIS_REPLICA_ACKS", "1"),
                ("VOICE_REDIS_ACK_TIMEOUT_MS", ack),
                ("REDIS_TIMEOUT_MS", timeout),
            ]))
        };
        assert!(with("250", "500").is_ok(), "the defaults fit");
        let err = with("1000", "500").unwrap_err().to_string();
        assert!(
            err.contains("VOICE_REDIS_ACK_TIMEOUT_MS") && err.contains("REDIS_TIMEOUT_MS"),
            "{err}"
        );
        assert!(with("300", "500").is_err(), "more than half");
        assert!(with("1000", "2000").is_ok());
    }

    #[test]
    fn secret_files_override_environment() {
        let dir = std::env::temp_dir().join(format!("engage-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("DB-PASSWORD"), "s3cret\n").unwrap();
        std::fs::write(dir.join("REDIS-CACHEKEY"), "rpass").unwrap();
        std::fs::write(
            dir.join("voice-redis-ors-stream"),
            r#"{"password":"vp","port":"10000","rejectUnauthorized":"true","servername":"voice"}"#,
        )
        .unwrap();
        let cfg = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u:env@h/d"),
            ("DB_PASSWORD", "from-env"),
            (
                "CONFIG_FOLDERS",
                &format!("{},/does/not/exist", dir.display()),
            ),
        ]))
        .unwrap();
        assert_eq!(cfg.db.password.unwrap().expose_secret(), "s3cret");
        assert_eq!(
            cfg.redis.password.as_ref().unwrap().expose_secret(),
            "rpass"
        );
        // GES's secret carries `rejectUnauthorized`, a TLS option: the built URL is TLS.
        assert_eq!(cfg.voice.url(&cfg.redis), "rediss://voice:10000");
        assert!(!cfg.voice.tls.insecure);
        assert_eq!(cfg.voice.redis_password.unwrap().expose_secret(), "vp");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A CA certificate for the configuration checks (public part only; its key was never kept).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBrzCCAVWgAwIBAgIUEw1v7VdKp5uZQPvsMjLA7WD3l6EwCgYIKoZIzj0EAwIw\nLDEqMCgGA1UEAwwhRW5nYWdlIHVuaXQtdGVzdCBDQSAobm8ga2V5IGtlcHQpMCAX\nDTI2MTIwMjEyMTA0MloYDzIxMjYxMTA4MTIxMDQyWjAsMSowKAYDVQQDDCFFbmdh\nZ2UgdW5pdC10ZXN0IENBIChubyBrZXkga2VwdCkwWTATBgcqhkjOPQIBBggqhkjO\nPQMBBwNCAAR9f+0nehgRSea3fUtLcqUzdrWn4U9NXqjZoobFzxnSXXFd3i7X1QAx\nFzvz8tuI+5ZpXLocC6v7sWTqCCTChhIio1MwUTAdBgNVHQ4EFgQUw6Nz2nXoT45H\nwh9vnWBpcZLIP9kwHwYDVR0jBBgwFoAUw6Nz2nXoT45Hwh9vnWBpcZLIP9kwDwYD\nVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiAWc7bZfHQHZ0cYfoJxBGH9\nP1YgHokT7FzQdkUw4SWz0gIhAPMOmymqugCvvi+i8W3JHT59l33xqCwdAIisT13O\nvPiQ\n-----END CERTIFICATE-----\n";

    #[test]
    fn ges_url_needs_an_http_scheme_and_a_host() {
        for bad in [
            "engage:3050",
            "ftp://e",
            "http://",
            "https:///x",
            " http://e",
            "",
        ] {
            let e = err_of(&[("GES_URL", bad)]);
            assert!(e.contains("GES_URL must be"), "{bad:?}: {e}");
        }
        for good in ["http://e:3050", "HTTPS://engage.example/base/"] {
            let cfg = Config::from_vars(vars(&[
                ("DATABASE_URL", "postgres://u@h/d"),
                ("GES_URL", good),
            ]));
            assert!(cfg.is_ok(), "{good:?}");
        }
    }

    fn err_of(pairs: &[(&str, &str)]) -> String {
        let mut all = vec![("DATABASE_URL", "postgres://u@h/d")];
        all.extend_from_slice(pairs);
        Config::from_vars(vars(&all)).unwrap_err().to_string()
    }

    #[test]
    fn redis_tls_settings_are_checked_at_start() {
        let dir = std::env::temp_dir().join(format!("engage-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, junk) = (dir.join("ca.pem"), dir.join("junk.pem"));
        std::fs::write(&ca, TEST_CA).unwrap();
        std::fs::write(&junk, "not a certificate").unwrap();
        let (ca, junk) = (ca.to_str().unwrap(), junk.to_str().unwrap());
        let tls_url = ("REDIS_URL", "rediss://r:6380");
        let e = err_of(&[tls_url, ("REDIS_TLS_CA_FILE", "/does/not/exist.pem")]);
        assert!(e.contains("REDIS_TLS_CA_FILE: cannot read"), "{e}");
        let e = err_of(&[tls_url, ("REDIS_TLS_CA_FILE", junk)]);
        assert!(
            e.contains("REDIS_TLS_CA_FILE") && e.contains("holds no certificate"),
            "{e}"
        );
        let e = err_of(&[("REDIS_URL", "redis://r:1"), ("REDIS_TLS_CA_FILE", ca)]);
        assert!(
            e.contains("REDIS_TLS_CA_FILE is set but REDIS_URL is not a rediss://"),
            "{e}"
        );
        let e = err_of(&[
            ("REDIS_URL", "rediss://a:1,redis://b:1"),
            ("REDIS_CLUSTER", "true"),
        ]);
        assert!(e.contains("REDIS_URL mixes rediss:// and redis://"), "{e}");
        let e = err_of(&[
            tls_url,
            ("REDIS_TLS_CA_FILE", ca),
            ("REDIS_TLS_CA", TEST_CA),
        ]);
        assert!(e.contains("both set"), "{e}");
        let e = err_of(&[tls_url, ("VOICE_REDIS_TLS_CA_FILE", ca)]);
        assert!(e.contains("set REDIS_TLS_CA_FILE instead"), "{e}");
        let e = err_of(&[
            ("VOICE_REDIS_URL", "rediss://v:1"),
            ("VOICE_REDIS_TLS", "true"),
        ]);
        assert!(e.contains("VOICE_REDIS_URL says TLS by its scheme"), "{e}");
        let ok = [
            ("DATABASE_URL", "postgres://u@h/d"),
            tls_url,
            ("REDIS_TLS_CA_FILE", ca),
        ];
        let cfg = Config::from_vars(vars(&ok)).unwrap();
        assert_eq!(cfg.redis.tls.ca_pem.as_deref(), Some(TEST_CA.as_bytes()));
        assert_eq!(
            (cfg.redis.tls.ca_var, cfg.redis.tls.insecure),
            ("REDIS_TLS_CA_FILE", false)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The voice secret: `rejectUnauthorized` (GES's TLS option) makes the built URL TLS and
    /// `false` turns verification off; `tls` decides explicitly; a CA may come as a secret file.
    #[test]
    fn voice_secret_decides_tls_and_verification() {
        let cases = [
            (
                r#"{"servername":"v","port":"1","rejectUnauthorized":"false"}"#,
                "rediss://v:1",
                true,
            ),
            (
                r#"{"servername":"v","port":1,"rejectUnauthorized":"True"}"#,
                "rediss://v:1",
                false,
            ),
            (r#"{"servername":"v","port":"1"}"#, "redis://v:1", false),
            (
                r#"{"servername":"v","port":"1","rejectUnauthorized":false,"tls":false}"#,
                "redis://v:1",
                false,
            ),
            (
                r#"{"servername":"v","port":"1","tls":"true"}"#,
                "rediss://v:1",
                false,
            ),
        ];
        for (secret, url, insecure) in cases {
            let dir = std::env::temp_dir().join(format!("engage-voice-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("voice-redis-ors-stream"), secret).unwrap();
            std::fs::write(dir.join("VOICE-REDIS-TLS-CA"), TEST_CA).unwrap();
            let folders = dir.to_str().unwrap();
            let source = [
                ("DATABASE_URL", "postgres://u@h/d"),
                ("CONFIG_FOLDERS", folders),
            ];
            let result = Config::from_vars(vars(&source));
            std::fs::remove_dir_all(&dir).unwrap();
            if url.starts_with("redis://") {
                // A CA for a plain URL is refused, naming both.
                let e = result.unwrap_err().to_string();
                assert!(
                    e.contains("VOICE_REDIS_TLS_CA_FILE is set but VOICE_REDIS_SERVERNAME"),
                    "{secret}: {e}"
                );
                continue;
            }
            let cfg = result.unwrap();
            assert_eq!(cfg.voice.url(&cfg.redis), url, "{secret}");
            assert_eq!(cfg.voice.tls.insecure, insecure, "{secret}");
            assert!(cfg.voice.tls.ca_pem.is_some(), "{secret}");
            assert_eq!(cfg.voice.tls.url_var, "VOICE_REDIS_SERVERNAME");
        }
    }

    /// The vault's keys are checked at start (messages name the variable, never a key); the
    /// key may come as the secret file `CREDENTIALS-KEY`.
    #[test]
    fn credentials_keys_and_captcha_settings_are_checked_at_start() {
        let cfg = Config::from_vars(vars(&[("DATABASE_URL", "postgres://u@h/d")])).unwrap();
        assert!(cfg.credentials.key.is_none(), "absent: not configured");
        assert_eq!(cfg.captcha.timeout_ms, 3_000);
        let key = crate::credentials::seal::generate_key().unwrap();
        let e = err_of(&[("CREDENTIALS_KEY", "dG9vIHNob3J0")]);
        assert!(
            e.contains("CREDENTIALS_KEY decodes to 9 bytes, not 32"),
            "{e}"
        );
        let e = err_of(&[("CREDENTIALS_KEYS_RETIRED", &key)]);
        assert!(
            e.contains("CREDENTIALS_KEYS_RETIRED is set without CREDENTIALS_KEY"),
            "{e}"
        );
        assert!(!e.contains(&key), "{e}");
        let e = err_of(&[("CREDENTIALS_KEY", &key), ("CREDENTIALS_KEYS_RETIRED", "x")]);
        assert!(
            e.contains("CREDENTIALS_KEYS_RETIRED entry 1 is not base64"),
            "{e}"
        );
        let e = err_of(&[("CAPTCHA_VERIFY_URL", "siteverify")]);
        assert!(e.contains("CAPTCHA_VERIFY_URL must be"), "{e}");
        let e = err_of(&[("CAPTCHA_TIMEOUT_MS", "60001")]);
        assert!(e.contains("CAPTCHA_TIMEOUT_MS must be"), "{e}");
        let dir = std::env::temp_dir().join(format!("engage-creds-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("CREDENTIALS-KEY"), format!("{key}\n")).unwrap();
        let cfg = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u@h/d"),
            ("CONFIG_FOLDERS", dir.to_str().unwrap()),
        ]));
        std::fs::remove_dir_all(&dir).unwrap();
        let cfg = cfg.unwrap();
        assert_eq!(cfg.credentials.key.unwrap().expose_secret(), key);
    }

    #[test]
    fn trusted_proxies_and_auth_limits() {
        let cfg = Config::from_vars(vars(&[("DATABASE_URL", "postgres://u@h/d")])).unwrap();
        assert!(cfg.http.trusted_proxies.0.is_empty());
        assert_eq!(cfg.http.auth_failure_limit, 30);
        assert_eq!(cfg.http.auth_negative_ttl_ms, 30_000);
        assert_eq!(cfg.http.auth_lookup_budget, 100);
        let cfg = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u@h/d"),
            ("TRUSTED_PROXIES", " 10.1.2.3/8, 192.168.1.7 ,fd00::/8,"),
            ("AUTH_FAILURE_LIMIT", "0"),
        ]))
        .unwrap();
        let t = &cfg.http.trusted_proxies;
        assert_eq!(t.0.len(), 3);
        assert!(t.contains("10.200.0.1".parse().unwrap()));
        assert!(t.contains("::ffff:192.168.1.7".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("192.168.1.8".parse().unwrap()));
        assert_eq!(cfg.http.auth_failure_limit, 0);
        let err = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u@h/d"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.local"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("TRUSTED_PROXIES") && err.contains("proxy.local"),
            "{err}"
        );
    }
}

//! Operations routes: liveness, readiness, dependency detail, Prometheus metrics. Liveness and
//! readiness are served on every port and say only UP/DOWN; the dependency detail (names,
//! errors) and metrics only on internal ports.

use std::time::{Duration, Instant};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use serde::Serialize;
use shared::{
    ApiError,
    http::ApiResult,
    http::{AppState, Envelope},
};

/// Probes that every binary serves on its main port (no data behind them).
pub fn probe_router() -> Router<AppState> {
    Router::new()
        .route("/ges/v1/health/live", get(live))
        .route("/ges/v1/health/ready", get(ready))
}

/// Probes plus the dependency detail.
pub fn health_router() -> Router<AppState> {
    probe_router().route("/ges/v1/health/detail", get(detail))
}

/// `GET /metrics` in Prometheus text format.
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

#[derive(Debug, Serialize)]
struct Up {
    status: &'static str,
}

async fn live() -> Envelope<Up> {
    Envelope::ok(Up { status: "UP" })
}

/// Ready = PostgreSQL reachable and migrations applied. Served on the public port too, so it
/// answers only UP or `DOWN` (503): which dependency failed and why is logged, and shown by
/// the internal port's `/ges/v1/health/detail` (docs/abuse.md#what-public-callers-see).
async fn ready(State(state): State<AppState>) -> ApiResult<Envelope<Up>> {
    let cause = match shared::db::migrations_current(&state.db).await {
        Ok(true) => return Ok(Envelope::ok(Up { status: "UP" })),
        Ok(false) => "database migrations are not applied".to_string(),
        Err(e) => format!("database unreachable: {e}"),
    };
    Err(ApiError::Unavailable {
        message: "DOWN".into(),
        cause: Some(format!("not ready: {cause}")),
    })
}

/// One dependency's health in `GET /ges/v1/health/detail`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// Which dependency: `postgresql`, `redis` (service Redis) or `voice-redis`.
    pub name: &'static str,
    /// `UP` or `DOWN`.
    pub status: &'static str,
    /// Round-trip time of the check.
    pub latency_ms: f64,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The body of `GET /ges/v1/health/detail`: overall status, build and each dependency.
#[derive(Debug, Serialize)]
pub struct Detail {
    /// `UP` when every dependency is up, else `DEGRADED` (`DOWN` when PostgreSQL is down).
    pub status: &'static str,
    /// Version of this build.
    pub version: &'static str,
    /// One entry per dependency checked, in a fixed order.
    pub dependencies: Vec<Dependency>,
}

async fn check<F, E>(name: &'static str, f: F) -> Dependency
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(2), f).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("timed out after 2 s".into()),
    };
    Dependency {
        name,
        status: if error.is_none() { "UP" } else { "DOWN" },
        latency_ms,
        error,
    }
}

/// Checks every dependency now.
pub async fn check_all(state: &AppState) -> Detail {
    let (pg, redis, voice) = tokio::join!(
        check("postgresql", async {
            let c = state.db.get().await.map_err(|e| e.to_string())?;
            c.simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        check("redis", state.redis.check()),
        check("voice-redis", state.voice.check()),
    );
    let status = if pg.error.is_some() {
        "DOWN"
    } else if redis.error.is_some() || voice.error.is_some() {
        "DEGRADED"
    } else {
        "UP"
    };
    Detail {
        status,
        version: env!("CARGO_PKG_VERSION"),
        dependencies: vec![pg, redis, voice],
    }
}

async fn detail(State(state): State<AppState>) -> Envelope<Detail> {
    let detail = check_all(&state).await;
    record_health(&detail);
    Envelope::ok(detail)
}

/// Sets the health gauges (1 = up) from a check.
fn record_health(detail: &Detail) {
    use shared::metrics as m;
    for dep in &detail.dependencies {
        let gauge = match dep.name {
            "postgresql" => m::POSTGRES_STATUS,
            "redis" => m::REDIS_CONNECTION,
            "voice-redis" => m::ORS_REDIS_STATUS,
            _ => continue,
        };
        m::set_health(gauge, dep.error.is_none());
    }
    m::set_health(m::GES_HEALTH, detail.status == "UP");
}

/// Refreshes the health gauges every `HEALTH_REFRESH_S` (default 60 s, well inside the 5 min
/// of the alerts that read them) for the life of the process; the task holds only a clone of
/// the state and ends with the runtime. `/ges/v1/health/detail` always checks live.
pub fn spawn_health_refresh(state: AppState) {
    tokio::spawn(async move {
        let every = Duration::from_secs(state.cfg.http.health_refresh_s);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            record_health(&check_all(&state).await);
        }
    });
}

async fn metrics() -> impl IntoResponse {
    let body = shared::metrics::render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

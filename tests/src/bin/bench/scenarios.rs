//! The scenarios. Each returns figures; scenarios that need parts not built yet are listed as
//! not measured rather than faked.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use harness::{Engage, PrivateRedis, Proc, TestEnv};
use serde_json::{Value, json};

use crate::{
    chart,
    load::{self, MakeRequest, Run, median},
};

/// What `just bench` runs: run lengths, repeats and which scenarios (`--quick`, `--only`).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Length of one load run.
    pub(crate) run: Duration,
    /// Runs per figure (median taken).
    pub(crate) repeats: usize,
    /// Callbacks per storage case.
    pub(crate) storage_count: usize,
    /// Scenarios to run (all when empty).
    pub(crate) only: Vec<String>,
}

/// Scenario names for `--only`, in run order.
pub(crate) const SCENARIOS: &[&str] = &[
    "create",
    "retrieve",
    "storage",
    "coldstart",
    "lateness",
    "lifecycle",
    "idle",
    "sizing",
    "scale",
    "cluster-dispatch",
];

/// Scenarios run only when named (`bench --only scale`): loading 10 million rows takes minutes.
const OPT_IN: &[&str] = &["scale"];

impl Options {
    /// Whether `scenario` runs.
    pub(crate) fn wants(&self, scenario: &str) -> bool {
        if self.only.is_empty() {
            !OPT_IN.contains(&scenario)
        } else {
            self.only.iter().any(|s| s == scenario)
        }
    }
}

/// One reported figure.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figure {
    /// What was measured.
    pub(crate) name: String,
    /// The measured value, in `unit` (the figure's name says which statistic: median, p99, …).
    pub(crate) value: f64,
    /// Unit of `value` as printed (`ms`, `callbacks/s`, `MB`, …).
    pub(crate) unit: String,
    /// Ceiling measured in the same run, and what it is.
    pub(crate) ceiling: Option<(f64, String)>,
    /// Budget (docs/decisions.md#budgets).
    pub(crate) budget: Option<String>,
    /// GES's published figure for the same thing, as text (docs/ges-behavior.md#sizing-figures).
    pub(crate) ges: Option<String>,
    /// Whether the budget is met.
    pub(crate) met: Option<bool>,
}

/// Everything the report shows.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// The machine's CPU model and core count, printed at the top of the report.
    pub(crate) machine: String,
    /// Figures in report order.
    pub(crate) figures: Vec<Figure>,
    /// Scenarios not measured, with the reason.
    pub(crate) missing: Vec<String>,
    /// Remarks printed under the table (partial runs, CPU split, ceilings).
    pub(crate) notes: Vec<String>,
    /// SVG charts written next to the report, linked from it.
    pub(crate) charts: Vec<String>,
    /// The empty axum route's req/s in this run (the ceiling of the read endpoints).
    pub(crate) http_ceiling: Option<f64>,
}

impl Results {
    pub(crate) fn add(&mut self, f: Figure) {
        println!("  {} = {:.3} {}", f.name, f.value, f.unit);
        self.figures.push(f);
    }
}

pub(crate) fn fig(name: &str, value: f64, unit: &str) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        ..Default::default()
    }
}

/// The empty axum server (HTTP ceiling).
pub(crate) async fn serve_empty(port: u16) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(|| async {
            axum::Json(json!({"status":"ok","service":"hello","v":10}))
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_string))
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpu}, {cores} cores")
}

/// A phone number valid for libphonenumber (NANP, New York exchange), distinct per i.
pub(crate) fn phone(i: u64) -> String {
    format!("+1212{:07}", 2_000_000 + i % 7_000_000)
}

/// Settings of the bench service: throttles out of the way, capacity ample.
pub(crate) fn bench_service() -> Value {
    json!({
        "throttle_per_service_1": 100_000_000, "throttle_ttl_1": 300,
        "throttle_per_service_2": 100_000_000, "throttle_ttl_2": 3600,
        "throttle_per_number_24h": 100_000_000, "in_queue_checking": false,
        "max_queued": 100_000_000, "slot_capacity": 100_000, "reject_out_of_hours": false,
        "max_days_ahead": 14
    })
}

fn create_request(
    engage: &Engage,
    key: &str,
    body: impl Fn(u64) -> Value + Send + Sync + 'static,
) -> MakeRequest {
    let url = format!("{}/engagement/v3/callbacks/create", engage.external);
    MakeRequest::post_json(&url, key, body)
}

/// Connections of the create saturation runs. Like pgbench's clients for the ceiling, the
/// best of these is the figure: a group-committing service needs requests in flight to fill its
/// batches, and 64 alone leaves cores idle (2026-12-05: 6,722 req/s at 64 with 28 % of the
/// machine idle, 7,249 at 256).
const CREATE_CONNS: [usize; 3] = [64, 256, 1024];

/// Create saturation and the PostgreSQL insert ceiling, measured in turns: each of
/// `opts.repeats` rounds runs pgbench at every one of [`PG_CLIENTS`], then create at every one
/// of [`CREATE_CONNS`], so the two figures compared see the same machine and disk. Measured one
/// after the other, the ceiling alone ranged 11,100–15,200 rows/s between runs of one afternoon
/// (2026-12-05), more than the budget's margin. Rows: each client and connection count (median
/// of the rounds) with the CPU per create and the load generator's share, the best of each, and
/// each round's ratio. Returns the best create run (median) and the best ceiling (median).
async fn create_against_ceiling(
    env: &TestEnv,
    immediate: &MakeRequest,
    opts: &Options,
    r: &mut Results,
) -> anyhow::Result<(Run, f64)> {
    let mut ceilings = vec![Vec::new(); PG_CLIENTS.len()];
    let mut runs = vec![Vec::new(); CREATE_CONNS.len()];
    let mut cpu = vec![crate::stats::Cpu::new(); CREATE_CONNS.len()];
    let mut ratios = Vec::new();
    for _ in 0..opts.repeats {
        let mut ceiling = 0f64;
        for (i, clients) in PG_CLIENTS.into_iter().enumerate() {
            let tps = pg_insert_ceiling(env, opts.run.as_secs(), clients)?;
            ceiling = ceiling.max(tps);
            ceilings[i].push(tps);
        }
        let mut best = 0f64;
        for (i, conns) in CREATE_CONNS.into_iter().enumerate() {
            let before = crate::stats::cpu_by_comm();
            let run = load::closed_loop(immediate.clone(), conns, opts.run).await;
            crate::stats::add_cpu(&mut cpu[i], &before, &crate::stats::cpu_by_comm());
            best = best.max(run.throughput);
            runs[i].push(run);
        }
        ratios.push(best / ceiling);
    }
    let ceiling = report_ceilings(ceilings, r);
    let mut best: Option<Run> = None;
    for ((conns, runs), cpu) in CREATE_CONNS.into_iter().zip(runs).zip(cpu) {
        let sat = report_saturation(conns, &runs, &cpu, r);
        if best.as_ref().is_none_or(|b| sat.throughput > b.throughput) {
            best = Some(sat);
        }
    }
    r.notes.push(format!(
        "Create / PostgreSQL insert ceiling, best of each in each round (the rounds measure both \
         in turns): {}",
        ratios
            .iter()
            .map(|x| format!("{x:.2}×"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok((best.expect("at least one connection count"), ceiling))
}

/// The rows of one connection count's create saturation runs (median): throughput with p99,
/// the CPU per create of every process and the load generator's share; returns the median run.
fn report_saturation(conns: usize, runs: &[Run], cpu: &crate::stats::Cpu, r: &mut Results) -> Run {
    let served: u64 = runs.iter().map(|r| r.latency.len()).sum();
    let none = crate::stats::Cpu::new();
    r.notes.push(format!(
        "CPU per create at saturation, {conns} connections (all processes on the machine, by \
         name): {}",
        crate::stats::cpu_per_request(&none, cpu, served.max(1) as f64)
    ));
    // The load generator runs on the same cores: its share is reported, not subtracted.
    r.add(fig(
        &format!(
            "Load generator's share of the stack's CPU at create saturation, {conns} \
             connections (bench of bench + engage + postgres + redis-server, same cores)"
        ),
        100.0 * crate::stats::cpu_share(&none, cpu, "bench"),
        "%",
    ));
    let sat = med_run(runs);
    r.add(fig(
        &format!(
            "Create at saturation, {conns} connections: p99 {:.1} ms; throughput",
            sat.ms(0.99)
        ),
        sat.throughput,
        "req/s",
    ));
    note_errors(r, &format!("create saturation, {conns} connections"), &sat);
    sat
}

/// `a / b / c`.
fn slashed(values: &[impl std::fmt::Display]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Notes the failed requests of `run`, if any, under `label`.
pub(crate) fn note_errors(r: &mut Results, label: &str, run: &Run) {
    if run.errors > 0 {
        r.notes.push(format!(
            "{label}: {} of {} requests failed",
            run.errors, run.attempted
        ));
    }
}

/// pgbench clients of the insert ceiling: the best of these is the ceiling (8 alone understates
/// PostgreSQL, whose group commit needs concurrent committers).
const PG_CLIENTS: [u32; 4] = [8, 32, 64, 128];

/// The rows of the PostgreSQL insert ceiling: each of [`PG_CLIENTS`] (median of its rounds'
/// figures) and the best of them, which it returns.
fn report_ceilings(ceilings: Vec<Vec<f64>>, r: &mut Results) -> f64 {
    let mut best = 0f64;
    for (clients, figures) in PG_CLIENTS.into_iter().zip(ceilings) {
        let tps = median(figures);
        best = best.max(tps);
        r.add(fig(
            &format!("PostgreSQL single-row insert, callbacks row shape, sync commit, pgbench -c {clients}"),
            tps,
            "rows/s",
        ));
    }
    r.add(fig(
        &format!(
            "Ceiling: PostgreSQL single-row insert, best of pgbench -c {}",
            slashed(&PG_CLIENTS)
        ),
        best,
        "rows/s",
    ));
    best
}

/// pgbench: single-row inserts of the callbacks row shape, synchronous_commit on.
fn pg_insert_ceiling(env: &TestEnv, secs: u64, clients: u32) -> anyhow::Result<f64> {
    let url = &env.vars["DATABASE_URL"];
    let schema = &env.id;
    let script = std::env::temp_dir().join(format!("{schema}-ins1.sql"));
    std::fs::write(
        &script,
        format!(
            "INSERT INTO {schema}.callbacks_ceiling (id, tenant_id, service, state, phone_number, desired_time, dispatch_at, scheduled, priority, attrs) \
             VALUES (gen_random_uuid(), 'bench', 'sales', 'QUEUED', '+12125550100', now(), now(), false, 0, '{{\"cbOfferType\":\"ASAP\"}}');\n"
        ),
    )?;
    let psql = |sql: &str| Command::new("psql").arg(url).arg("-qc").arg(sql).status();
    psql(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.callbacks_ceiling (LIKE {schema}.callbacks INCLUDING ALL)"
    ))?;
    let pgbench = ["/usr/lib/postgresql/15/bin/pgbench", "pgbench"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .ok_or_else(|| anyhow::anyhow!("pgbench not found"))?;
    let out = Command::new(pgbench)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| {
            l.trim_start_matches("tps = ")
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "pgbench printed no tps: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    psql(&format!("DROP TABLE {schema}.callbacks_ceiling"))?;
    Ok(tps)
}

pub(crate) async fn repeat<F, Fut>(n: usize, mut f: F) -> Vec<Run>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Run>,
{
    let mut runs = Vec::new();
    for _ in 0..n {
        runs.push(f().await);
    }
    runs
}

pub(crate) fn med_run(runs: &[Run]) -> Run {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
    sorted[sorted.len() / 2].clone()
}

/// Runs every scenario.
pub(crate) async fn run_all(opts: &Options, out: &Path) -> anyhow::Result<Results> {
    let mut r = Results {
        machine: machine(),
        ..Default::default()
    };
    let redis = PrivateRedis::new(false);
    let env = crate::deployed_env()
        .with("REDIS_URL", &redis.url())
        .with("VOICE_REDIS_URL", &redis.url())
        .with("LOG_LEVEL", "WARN");
    let engage = Engage::start(&env, &[]).await;
    let key = engage.tenant("bench").await;
    engage.service("bench", "sales", bench_service()).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let engage = Engage { http, ..engage };

    // The HTTP ceiling of this run (for the HTTP scenarios); create measures the PostgreSQL
    // ceiling in turns with itself.
    let http_tp = if ["create", "retrieve", "lifecycle"]
        .iter()
        .any(|s| opts.wants(s))
    {
        println!("ceilings");
        let empty_port = harness::free_port();
        let _empty = Proc::spawn(
            &env,
            "bench",
            &["--serve-empty", &empty_port.to_string()],
            &[],
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hello = MakeRequest::get(&format!("http://127.0.0.1:{empty_port}/hello"), None);
        let http_ceiling = med_run(
            &repeat(opts.repeats, || {
                load::closed_loop(hello.clone(), 64, opts.run)
            })
            .await,
        );
        r.http_ceiling = Some(http_ceiling.throughput);
        r.add(fig(
            "Ceiling: empty axum route, same load generator (64 connections)",
            http_ceiling.throughput,
            "req/s",
        ));

        http_ceiling.throughput
    } else {
        f64::NAN
    };

    if opts.wants("create") {
        // Create, durable.
        println!("create");
        let immediate = create_request(
            &engage,
            &key,
            |i| json!({"serviceName": "sales", "phoneNumber": phone(i)}),
        );
        let (sat, pg) = create_against_ceiling(&env, &immediate, opts, &mut r).await?;
        r.add(Figure {
            ceiling: Some((pg, "PG insert ceiling, best client count".into())),
            budget: Some("≥ 1.0× PG insert ceiling at its best client count".into()),
            met: Some(sat.throughput >= pg),
            ..fig(
                &format!(
                    "Create (immediate, durable) at saturation, best of {} connections",
                    slashed(&CREATE_CONNS)
                ),
                sat.throughput,
                "req/s",
            )
        });
        r.add(Figure {
            ceiling: Some((http_tp, "empty route".into())),
            ..fig(
                "Create at saturation vs empty axum route",
                sat.throughput,
                "req/s",
            )
        });
        let mut rate_runs = Vec::new();
        for rate in [500u32, 1000, 2000] {
            let run = med_run(
                &repeat(opts.repeats, || {
                    load::open_loop(immediate.clone(), rate, opts.run)
                })
                .await,
            );
            r.add(fig(
                &format!(
                    "Create at {rate} req/s: p50 / p99 / p999 = {:.2} / {:.2} / {:.2} ms; p99",
                    run.ms(0.5),
                    run.ms(0.99),
                    run.ms(0.999)
                ),
                run.ms(0.99),
                "ms",
            ));
            note_errors(&mut r, &format!("create at {rate} req/s"), &run);
            rate_runs.push((format!("{rate} req/s"), run));
        }
        let hists: Vec<(String, &hdrhistogram::Histogram<u64>)> = rate_runs
            .iter()
            .map(|(n, run)| (n.clone(), &run.latency))
            .collect();
        chart::percentiles(
            &out.join("create-latency.svg"),
            "Create latency at fixed rates (open loop)",
            &hists,
        )?;
        r.charts.push("create-latency.svg".into());
    }

    if opts.wants("retrieve") {
        // Retrieve.
        println!("retrieve");
        let mut ids = Vec::new();
        for i in 0..200 {
            let (_, body) = engage
                .post(
                    &key,
                    "/engagement/v3/callbacks/create",
                    json!({"serviceName": "sales", "phoneNumber": phone(i)}),
                )
                .await;
            if let Some(id) = body["data"]["id"].as_str() {
                ids.push(id.to_string());
            }
        }
        let retrieve = MakeRequest::post_json(
            &format!("{}/engagement/v3/callbacks/retrieve", engage.external),
            &key,
            move |i| json!({"id": ids[i as usize % ids.len()]}),
        );
        let ret = med_run(
            &repeat(opts.repeats, || {
                load::closed_loop(retrieve.clone(), 64, opts.run)
            })
            .await,
        );
        r.add(Figure {
            ceiling: Some((http_tp, "empty route".into())),
            ..fig("Retrieve at saturation", ret.throughput, "req/s")
        });
        r.add(fig(
            "Retrieve at saturation: p99 latency",
            ret.ms(0.99),
            "ms",
        ));
    }

    if opts.wants("storage") {
        storage(opts, &redis, &mut r).await?;
    }
    if opts.wants("coldstart") {
        cold_start(&env, &mut r)?;
    }
    if opts.wants("lateness") {
        crate::dispatch::lateness(opts, &mut r).await?;
    }
    if opts.wants("lifecycle") {
        crate::dispatch::lifecycle(opts, &mut r).await?;
    }
    if opts.wants("idle") && !opts.wants("sizing") {
        // The sizing scenario measures idle too, on its own processes.
        crate::dispatch::idle(opts, &mut r).await?;
    }
    if opts.wants("scale") {
        crate::scale::scale(opts, &mut r).await?;
    }
    if opts.wants("sizing") {
        crate::dispatch::sizing(opts, &mut r).await?;
    }
    if opts.wants("cluster-dispatch") {
        crate::fleet::cluster_dispatch(opts, &mut r).await?;
    }
    Ok(r)
}

/// Storage per scheduled callback, as GES's sizing table: 0, 10 KB and 100 KB of user data.
async fn storage(opts: &Options, redis: &PrivateRedis, r: &mut Results) -> anyhow::Result<()> {
    println!("storage");
    for (label, ud_kb, ges_pg, ges_redis) in [
        (
            "no user data",
            0usize,
            "6.5–7.0 kB (41.1 MB / 10k)",
            "4.5–5.5 kB (26.51 MB / 10k)",
        ),
        (
            "10 KB user data",
            10,
            "25.3 kB (252.91 MB / 10k)",
            "6.4 kB (64.44 MB / 10k)",
        ),
        (
            "100 KB user data",
            100,
            "59.6 kB (595.79 MB / 10k)",
            "11.1 kB (110.58 MB / 10k)",
        ),
    ] {
        let env = crate::deployed_env()
            .with("REDIS_URL", &redis.url())
            .with("VOICE_REDIS_URL", &redis.url())
            .with("LOG_LEVEL", "WARN");
        let engage = Engage::start(&env, &[]).await;
        let key = engage.tenant("bench").await;
        engage.service("bench", "sales", bench_service()).await;
        // Text of realistic entropy: hex of random ids (compresses about 2:1, like typical JSON).
        let blob: String = (0..ud_kb * 1024 / 32)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let mem0 = crate::stats::used_memory(&redis.url()).await;
        let calls0 = crate::stats::total_calls(&redis.url()).await;
        let base = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
        let n = opts.storage_count;
        let http = engage.http.clone();
        let url = format!("{}/engagement/v3/callbacks/create", engage.internal);
        let blob = Arc::new(blob);
        let futures: Vec<_> = (0..n as u64)
            .map(|i| {
                let at = base + jiff::SignedDuration::from_secs((i as i64 * 97) % (13 * 86_400));
                let mut body = json!({"serviceName": "sales", "phoneNumber": phone(i), "desiredTime": at.to_string()});
                if ud_kb > 0 {
                    body["userData"] = json!({"notes": blob.as_str()});
                }
                http.post(&url).header("x-api-key", &key).json(&body)
            })
            .collect();
        let mut ok = 0usize;
        for chunk in futures.into_iter().collect::<Vec<_>>().chunks_mut(64) {
            let batch: Vec<_> = chunk
                .iter_mut()
                .map(|req| {
                    let req = req.try_clone().expect("cloneable request");
                    async move {
                        req.send()
                            .await
                            .map(|r| r.status().is_success())
                            .unwrap_or(false)
                    }
                })
                .collect();
            ok += futures::future::join_all(batch)
                .await
                .into_iter()
                .filter(|b| *b)
                .count();
        }
        let calls = crate::stats::total_calls(&redis.url()).await - calls0;
        let mem = crate::stats::used_memory(&redis.url()).await - mem0;
        r.notes.push(format!(
            "Redis bytes per scheduled callback by structure, {label} (MEMORY USAGE): {}",
            crate::stats::memory_by_kind(&redis.url(), &env.id, ok.max(1) as f64).await
        ));
        let pg = env.pg().await;
        pg.execute("VACUUM ANALYZE", &[]).await.ok();
        let bytes: i64 = pg
            .query_one(
                "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname IN ('callbacks', 'callback_events', 'slot_bookings', 'idempotency_keys')",
                &[&env.id],
            )
            .await?
            .get(0);
        let per_pg = bytes as f64 / ok.max(1) as f64 / 1024.0;
        let per_redis = mem / ok.max(1) as f64 / 1024.0;
        if ok < n {
            r.notes.push(format!(
                "storage {label}: only {ok} of {n} creates succeeded"
            ));
        }
        let (pg_budget, pg_met) = if ud_kb == 0 {
            ("≤ 1.5 kB".to_string(), per_pg <= 1.5)
        } else {
            (
                format!(
                    "≤ 1.5 kB + 1.2 kB × {ud_kb} = {:.1} kB",
                    1.5 + 1.2 * ud_kb as f64
                ),
                per_pg <= 1.5 + 1.2 * ud_kb as f64,
            )
        };
        r.add(Figure {
            budget: Some(pg_budget),
            ges: Some(ges_pg.into()),
            met: Some(pg_met),
            ..fig(
                &format!(
                    "PostgreSQL bytes per scheduled callback, {label} (tables + indexes + TOAST)"
                ),
                per_pg,
                "kB",
            )
        });
        r.add(Figure {
            budget: Some("≤ 0.2 kB, user data stays in PostgreSQL (docs/costs.md)".into()),
            ges: Some(ges_redis.into()),
            met: Some(per_redis <= 0.2),
            ..fig(
                &format!("Redis memory per scheduled callback, {label}"),
                per_redis,
                "kB",
            )
        });
        if ud_kb == 0 {
            r.add(fig(
                "Redis commands per create (scheduled), INFO commandstats delta",
                calls / ok.max(1) as f64,
                "commands",
            ));
        }
    }
    Ok(())
}

/// Process start → first successful response of a function binary, idle RSS, binary size.
fn cold_start(env: &TestEnv, r: &mut Results) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    println!("cold start");
    let bin = harness::binary("callbacks-create");
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..20 {
        let port = harness::free_port();
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .env_clear()
            .envs(&env.vars)
            .env("PORT", port.to_string())
            .env("METRICS_PORT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut answered = false;
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /ges/v1/health/live HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.0 200")
                    || buf.starts_with(b"HTTP/1.1 200")
                {
                    answered = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        std::thread::sleep(Duration::from_millis(300));
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        {
            rss.push(kb / 1024.0);
        }
        let _ = child.kill();
        let _ = child.wait();
        if answered {
            times.push(elapsed);
        }
    }
    let start_ms = median(times);
    let rss_mb = median(rss);
    r.add(Figure {
        budget: Some("≤ 50 ms".into()),
        ges: Some("pod start, Node.js".into()),
        met: Some(start_ms <= 50.0),
        ..fig(
            "Function binary (callbacks-create): process start → first 200, median of 20",
            start_ms,
            "ms",
        )
    });
    r.add(Figure {
        budget: Some("≤ 20 MB".into()),
        met: Some(rss_mb <= 20.0),
        ..fig(
            "Function binary idle RSS (0.3 s after first response), median",
            rss_mb,
            "MB",
        )
    });
    let size = std::fs::metadata(&bin)?.len() as f64 / 1024.0 / 1024.0;
    let profile = bin
        .parent()
        .and_then(|d| d.file_name())
        .map_or("?".into(), |d| d.to_string_lossy().into_owned());
    r.add(fig(
        &format!("Function binary size ({profile} profile)"),
        size,
        "MB",
    ));
    Ok(())
}

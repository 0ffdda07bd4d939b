//! Dispatcher scenarios: lateness at a sustained due rate and in a burst, Redis commands per
//! callback over its life, while waiting and while idle, GES's sizing scenario, worker memory.

use std::time::{Duration, Instant};

use harness::{Engage, PrivateRedis, Proc, TestEnv, WorkerProc};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::scenarios::{Figure, Options, Results, bench_service, fig, phone};

pub(crate) async fn stream_len(url: &str, stream: &str) -> u64 {
    let mut c = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut c)
        .await
        .unwrap_or(0)
}

/// Creates callbacks from `bodies` with 64 requests in flight; returns how many succeeded.
pub(crate) async fn create_all(engage: &Engage, key: &str, bodies: Vec<Value>) -> usize {
    let url = format!("{}/engagement/v3/callbacks/create", engage.internal);
    let mut ok = 0;
    for chunk in bodies.chunks(64) {
        let calls = chunk.iter().map(|b| {
            let req = engage.http.post(&url).header("x-api-key", key).json(b);
            async move {
                req.send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        });
        ok += futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|b| *b)
            .count();
    }
    ok
}

pub(crate) struct Stack {
    pub(crate) redis: PrivateRedis,
    pub(crate) voice: PrivateRedis,
    pub(crate) env: TestEnv,
    pub(crate) engage: Engage,
    pub(crate) key: String,
}

pub(crate) async fn stack() -> Stack {
    let (redis, voice) = (PrivateRedis::new(false), PrivateRedis::new(false));
    let env = crate::deployed_env()
        .with("REDIS_URL", &redis.url())
        .with("VOICE_REDIS_URL", &voice.url())
        .with("LOG_LEVEL", "WARN")
        .with("WORKER_TENANT_RATE", "0");
    let engage = Engage::start(&env, &[]).await;
    let key = engage.tenant("bench").await;
    let mut settings = bench_service();
    settings["dispatch_rate_per_second"] = json!(1_000_000);
    settings["max_days_ahead"] = json!(15);
    engage.service("bench", "sales", settings).await;
    Stack {
        redis,
        voice,
        env,
        engage,
        key,
    }
}

/// Lateness = XADD time of the voice-stream entry − the callback's due time, per entry.
pub(crate) async fn lateness_of(voice: &str, stream: &str) -> Vec<f64> {
    let mut c = redis::Client::open(voice)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut conn = c.clone();
    let entries = harness::stream_entries(&mut conn, stream).await;
    let _ = &mut c;
    let late: Vec<f64> = entries
        .iter()
        .filter_map(|(id, f)| {
            let added: f64 = id.split('-').next()?.parse().ok()?;
            let due: Timestamp = f.get("desired_time")?.parse().ok()?;
            Some(added - due.as_millisecond() as f64)
        })
        .collect();
    // What the figures rest on: a duplicate or an unreadable entry would skew them silently.
    let distinct: std::collections::HashSet<&str> = entries
        .iter()
        .filter_map(|(_, f)| f.get("callback_id").map(String::as_str))
        .collect();
    let min = late.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "  ({stream}: {} entries, {} distinct callbacks, {} with a readable due time, earliest lateness {min:.0} ms)",
        entries.len(),
        distinct.len(),
        late.len()
    );
    late
}

/// The `Instant` at wall-clock time `t` (now, if `t` is past).
fn until(t: Timestamp) -> Instant {
    let left = t.duration_since(Timestamp::now()).max(SignedDuration::ZERO);
    Instant::now() + Duration::try_from(left).unwrap_or_default()
}

pub(crate) fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

/// 1,000 due per second for `secs`, then a burst of 10,000 due at one instant.
pub(crate) async fn lateness(opts: &Options, r: &mut Results) -> anyhow::Result<()> {
    println!("dispatch lateness");
    let secs: i64 = if opts.repeats == 1 { 10 } else { 60 };
    let s = stack().await;
    let worker = WorkerProc::start(&s.env, &[]).await;
    let rate = 1000i64;
    let total = (rate * secs) as usize;
    // Leave time to book them all before the first falls due: measure the booking rate on
    // 1,000 callbacks scheduled hours ahead, then lead = 1.5 × the expected booking time + 10 s.
    let far = (Timestamp::now() + SignedDuration::from_hours(6)).to_string();
    let calib: Vec<Value> = (0..1000u64)
        .map(|i| json!({"serviceName": "sales", "phoneNumber": phone(800_000 + i), "desiredTime": far}))
        .collect();
    let t = Instant::now();
    let n = create_all(&s.engage, &s.key, calib).await.max(1);
    let per_sec = n as f64 / t.elapsed().as_secs_f64();
    let lead = 10.0 + 1.5 * total as f64 / per_sec;
    let t0 = Timestamp::now() + SignedDuration::from_secs_f64(lead);
    let bodies: Vec<Value> = (0..total as i64)
        .map(|i| json!({"serviceName": "sales", "phoneNumber": phone(i as u64),
                        "desiredTime": (t0 + SignedDuration::from_millis(i * 1000 / rate)).to_string()}))
        .collect();
    let booked = create_all(&s.engage, &s.key, bodies).await;
    anyhow::ensure!(
        Timestamp::now() < t0,
        "booking took longer than the lead; lower the rate"
    );
    let stream = s.env.voice_stream().to_string();
    // Wait until a minute after the last one falls due, however long booking took: a deadline
    // counted from the end of booking once measured a slow booking's run before its first due
    // time, and left the rest to fall due in the burst runs below (counted there).
    let deadline = until(t0 + SignedDuration::from_secs(secs + 60));
    while stream_len(&s.voice.url(), &stream).await < booked as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut late = lateness_of(&s.voice.url(), &stream).await;
    let n = late.len();
    r.add(Figure {
        budget: Some("p99 ≤ 100 ms".into()),
        ges: Some("minute-grade polling".into()),
        met: Some(pct(&mut late, 0.99) <= 100.0),
        ..fig(
            &format!("Dispatch lateness at {rate} due/s for {secs} s ({n} of {booked} in the stream): p50 {:.1} ms, max {:.1} ms; p99",
                pct(&mut late, 0.5), pct(&mut late, 1.0)),
            pct(&mut late, 0.99),
            "ms",
        )
    });
    if n != booked {
        r.notes.push(format!(
            "lateness run: {n} stream entries for {booked} callbacks"
        ));
    }
    let mut series: Vec<(f64, f64)> = late
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64 / n.max(1) as f64 * 100.0, *v))
        .collect();
    series.sort_by(|a, b| a.0.total_cmp(&b.0));
    crate::chart::lines(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/dispatch-lateness.svg"),
        &format!("Dispatch lateness, {rate} due/s (sorted)"),
        "percentile",
        "lateness (ms)",
        &[("lateness".into(), series)],
    )?;
    r.charts.push("dispatch-lateness.svg".into());

    // The burst runs below use workers of their own (other voice streams, same schedule index).
    drop(worker);

    // Burst: 10,000 due at one instant, with 1, 2 and 3 workers: drain time and throughput.
    let burst = if opts.repeats == 1 { 2_000 } else { 10_000 };
    let mut points = Vec::new();
    for workers in 1..=3usize {
        let env2 = s
            .env
            .clone()
            .with("VOICE_STREAM", &format!("{}:burst{workers}", s.env.id));
        let engage2 = Engage::start(&env2, &[]).await;
        let mut procs = Vec::new();
        for _ in 0..workers {
            procs.push(WorkerProc::start(&env2, &[]).await);
        }
        let t1 =
            Timestamp::now() + SignedDuration::from_secs_f64(10.0 + 1.5 * burst as f64 / per_sec);
        let bodies: Vec<Value> = (0..burst)
            .map(|i| json!({"serviceName": "sales", "phoneNumber": phone(i), "desiredTime": t1.to_string()}))
            .collect();
        let booked = create_all(&engage2, &s.key, bodies).await;
        anyhow::ensure!(
            Timestamp::now() < t1,
            "burst booking took longer than its lead"
        );
        let stream2 = env2.voice_stream().to_string();
        let deadline = until(t1 + SignedDuration::from_secs(90));
        while stream_len(&s.voice.url(), &stream2).await < booked as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut late = lateness_of(&s.voice.url(), &stream2).await;
        let n = late.len();
        let drain_ms = pct(&mut late, 1.0);
        let throughput = n as f64 / (drain_ms.max(1.0) / 1000.0);
        points.push((workers as f64, throughput));
        if workers == 1 {
            r.add(fig(
                &format!("Burst: {booked} due at one instant, 1 worker, {n} of {booked} in the stream; p50 {:.0} ms; all in after (max lateness)", pct(&mut late, 0.5)),
                drain_ms,
                "ms",
            ));
        }
        r.add(fig(
            &format!("Burst of {booked}, {workers} worker(s) on these 2 cores: {n} of {booked} in the stream after {drain_ms:.0} ms; dispatch throughput"),
            throughput,
            "callbacks/s",
        ));
        drop(procs);
    }
    crate::chart::lines(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/dispatch-throughput.svg"),
        &format!("Dispatch throughput vs workers (burst of {burst} due at once)"),
        "workers",
        "callbacks per second",
        &[("throughput".into(), points)],
    )?;
    r.charts.push("dispatch-throughput.svg".into());
    drop((s.redis, s.voice));
    Ok(())
}

/// Service-Redis commands per LONE immediate callback: each created alone and COMPLETED before
/// the next (no group commit, no shared claim), the budget case of docs/costs.md.
async fn lone(s: &Stack, r: &mut Results) -> anyhow::Result<()> {
    let pg = s.env.pg().await;
    let n = 30u64;
    let before = crate::stats::total_calls(&s.redis.url()).await;
    for i in 0..n {
        let body = json!({"serviceName": "sales", "phoneNumber": phone(70_000 + i)});
        let (_, resp) = s
            .engage
            .post(&s.key, "/engagement/v3/callbacks/create", body)
            .await;
        let id = resp["data"]["id"].as_str().unwrap_or_default().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let done: i64 = pg
                .query_one(
                    "SELECT count(*) FROM callbacks WHERE id::text = $1 AND state = 'COMPLETED'",
                    &[&id],
                )
                .await?
                .get(0);
            if done == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Apart beyond the pacing free allowance too (docs/pacing.md, docs/costs.md).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per = (crate::stats::total_calls(&s.redis.url()).await - before) / n as f64;
    r.add(Figure {
        budget: Some("≤ 15".into()),
        met: Some(per <= 15.0),
        ..fig("Service-Redis commands per LONE immediate callback (created one at a time, each COMPLETED before the next), create → COMPLETED", per, "commands")
    });
    Ok(())
}

/// Service-Redis commands per immediate callback, create → COMPLETED, with `ors-sim`.
pub(crate) async fn lifecycle(opts: &Options, r: &mut Results) -> anyhow::Result<()> {
    println!("commands per lifecycle");
    let s = stack().await;
    // The voice platform reports each state to the events URL in the entry: this engage.
    let _worker = WorkerProc::start(&s.env, &[("GES_URL", s.engage.internal.clone())]).await;
    let sim = Proc::spawn(
        &s.env,
        "ors-sim",
        &[
            "--agents",
            "50",
            "--handle-ms",
            "20",
            "--routing-ms",
            "5",
            "--dist",
            "fixed",
        ],
        &[],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = crate::stats::total_calls(&s.redis.url()).await;
    let n = 300;
    let bodies: Vec<Value> = (0..n)
        .map(|i| json!({"serviceName": "sales", "phoneNumber": phone(i)}))
        .collect();
    let booked = create_all(&s.engage, &s.key, bodies).await;
    let pg = s.env.pg().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let done = pg
            .query_one(
                "SELECT count(*) FROM callbacks WHERE state = 'COMPLETED'",
                &[],
            )
            .await?
            .get::<_, i64>(0);
        if done as usize >= booked || Instant::now() > deadline {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per = (crate::stats::total_calls(&s.redis.url()).await - before) / booked.max(1) as f64;
    if (done as usize) < booked {
        r.notes.push(format!(
            "lifecycle: only {done} of {booked} callbacks reached COMPLETED within 60 s; the commands-per-callback figure is incomplete"
        ));
    }
    r.notes.push(format!(
        "lifecycle: {booked} immediate callbacks created 64 at a time, {done} COMPLETED by ors-sim (50 agents, 20 ms calls); concurrent creates share index writes (group commit), so one callback alone costs more (the LONE row and the test `ors_service_redis_commands_per_lone_immediate_callback` measure that case)"
    ));
    r.add(Figure {
        budget: Some("≤ 15".into()),
        ges: Some("~110".into()),
        met: Some(per <= 15.0),
        ..fig("Service-Redis commands per immediate callback, create → COMPLETED (incl. commands inside scripts, all throttles on)", per, "commands")
    });

    lone(&s, r).await?;

    // The wait-time endpoints, with real history (the 300 just served) and 200 waiting: the
    // voice simulator is stopped, so these stay queued.
    drop(sim);
    let waiting: Vec<Value> = (0..200)
        .map(|i| json!({"serviceName": "sales", "phoneNumber": phone(50_000 + i)}))
        .collect();
    create_all(&s.engage, &s.key, waiting).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_endpoints(opts, &s, r).await
}

/// Requests per second and p99 of estimated-wait-time (modes 1 and 2) and queue-status.
async fn wait_endpoints(opts: &Options, s: &Stack, r: &mut Results) -> anyhow::Result<()> {
    println!("wait-time endpoints");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    for (label, path) in [
        (
            "Estimated wait time, mode1",
            "/engagement/v3/estimated-wait-time?virtual-queues=sales&mode=mode1",
        ),
        (
            "Estimated wait time, mode2",
            "/engagement/v3/estimated-wait-time?virtual-queues=sales&mode=mode2",
        ),
        (
            "Queue status",
            "/engagement/v3/callbacks/queue-status/sales",
        ),
    ] {
        let url = format!("{}{path}", s.engage.external);
        // One answer first, quoted in the notes: the figures are for real estimates.
        let sample: Value = http
            .get(&url)
            .header("x-api-key", &s.key)
            .send()
            .await?
            .json()
            .await?;
        r.notes
            .push(format!("{label}: sample answer {}", sample["data"]));
        let make = crate::load::MakeRequest::get(&url, Some(&s.key));
        let run = crate::scenarios::med_run(
            &crate::scenarios::repeat(opts.repeats, || {
                crate::load::closed_loop(make.clone(), 64, opts.run)
            })
            .await,
        );
        r.add(Figure {
            ceiling: r.http_ceiling.map(|c| (c, "empty route".into())),
            ..fig(
                &format!(
                    "{label} at saturation, 64 connections: p50 / p99 = {:.2} / {:.2} ms; throughput",
                    run.ms(0.5),
                    run.ms(0.99)
                ),
                run.throughput,
                "req/s",
            )
        });
        crate::scenarios::note_errors(r, label, &run);
    }
    Ok(())
}

/// GES's sizing scenario (134,400 scheduled over 14 days + 1,000 immediate), then commands per
/// minute, per waiting callback-hour, idle per second, and the worker's memory.
pub(crate) async fn sizing(opts: &Options, r: &mut Results) -> anyhow::Result<()> {
    println!("sizing scenario");
    let scale = if opts.repeats == 1 { 10 } else { 1 };
    let s = stack().await;
    let worker = WorkerProc::start(&s.env, &[]).await;
    let window = if opts.repeats == 1 { 30.0 } else { 120.0 };

    // Idle first, on the same processes.
    let idle = idle_rate(&s, window, r).await;

    let slot = 15 * 60;
    let first = Timestamp::from_second((Timestamp::now().as_second() / slot + 2) * slot)?;
    let slots = 1344 / scale;
    let mut bodies = Vec::with_capacity(slots as usize * 100);
    for k in 0..slots {
        let at = first + SignedDuration::from_secs(k * slot + 60);
        for j in 0..100 {
            bodies.push(json!({"serviceName": "sales", "phoneNumber": phone((k * 100 + j) as u64), "desiredTime": at.to_string()}));
        }
    }
    let started = Instant::now();
    let scheduled = create_all(&s.engage, &s.key, bodies).await;
    let book_secs = started.elapsed().as_secs_f64();
    let immediate: Vec<Value> = (0..1000 / scale)
        .map(|i| json!({"serviceName": "sales", "phoneNumber": phone(900_000 + i as u64)}))
        .collect();
    let immediate = create_all(&s.engage, &s.key, immediate).await;
    // The immediate ones dispatched (queued at the voice platform), and the one look at each
    // shard's in-flight set when their claims' lease (15 s) would have run out: then nothing
    // remains but waiting.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = crate::stats::calls_by_command(&s.redis.url()).await;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let after = crate::stats::calls_by_command(&s.redis.url()).await;
    let delta: f64 = after.values().sum::<f64>() - before.values().sum::<f64>();
    r.notes.push(format!(
        "service-Redis commands during the {window} s sizing window (worker + engage serve, health checks included): {}",
        crate::stats::delta_text(&before, &after)
    ));
    r.add(Figure {
        ges: Some("138,756 per minute".into()),
        ..fig(&format!("GES sizing scenario: {scheduled} scheduled (14 days × 96 slots × 100) + {immediate} immediate waiting; service-Redis commands per minute"), delta * 60.0 / window, "commands/min")
    });
    // Marginal cost of waiting: the loaded rate minus the idle rate of the same processes,
    // per callback-hour. Periodic work lands 0 or 1 times more in one window than in the
    // other, so "0" means below that resolution (a few commands per window over all callbacks).
    let loaded = delta / window;
    let marginal = (loaded - idle).max(0.0) * 3600.0 / scheduled.max(1) as f64;
    // Periodic work that lands 0 or 1 times in a window: one pass over every shard (claim
    // script: 5 commands) and one safety poll (2 per shard).
    let shards = 4.0;
    let resolution = 7.0 * shards / window * 3600.0 / scheduled.max(1) as f64;
    r.add(Figure {
        budget: Some("0".into()),
        ges: Some("60 (1 per minute)".into()),
        met: Some(marginal <= resolution),
        ..fig(
            &format!(
                "Service-Redis commands per scheduled callback per hour of waiting (loaded {loaded:.3}/s − idle {idle:.3}/s, over {scheduled}; resolution {resolution:.4})"
            ),
            marginal,
            "commands",
        )
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker.proc.child.id()))
        .unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    r.add(fig(
        &format!("Worker RSS with {scheduled} scheduled callbacks"),
        rss / 1024.0,
        "MB",
    ));
    r.add(fig(
        "Booking rate while loading the sizing scenario (64 in flight, internal port)",
        scheduled as f64 / book_secs,
        "creates/s",
    ));

    // Availability over 14 days of 15-minute slots, with those bookings in place.
    let (url, key) = (
        format!(
            "{}/engagement/v3/callbacks/availability/sales?numberOfDays=14&reportBusy=true",
            s.engage.external
        ),
        s.key.clone(),
    );
    let make = crate::load::MakeRequest::get(&url, Some(&key));
    let run = crate::load::closed_loop(make, 16, opts.run).await;
    r.add(fig(&format!("Availability, 14 days of 15-min slots (1,344 slots), 16 connections: p99 {:.1} ms; throughput", run.ms(0.99)), run.throughput, "req/s"));
    Ok(())
}

/// The idle scenario alone (`bench --only idle`): a fresh stack and worker, 101 tenants,
/// nothing booked; service-Redis commands per second over the window.
pub(crate) async fn idle(opts: &Options, r: &mut Results) -> anyhow::Result<()> {
    println!("idle scenario");
    let s = stack().await;
    let _worker = WorkerProc::start(&s.env, &[]).await;
    let window = if opts.repeats == 1 { 30.0 } else { 120.0 };
    idle_rate(&s, window, r).await;
    Ok(())
}

/// Service-Redis commands per second of `engage serve` and a worker at rest over `window`
/// seconds, with 100 more tenants that each have a service (idle cost must not grow with
/// tenants), after the start-up passes have settled; recorded as a figure and returned.
async fn idle_rate(s: &Stack, window: f64, r: &mut Results) -> f64 {
    // 100 tenants with a service each and nothing booked
    // (idle cost must not grow with tenants), after the start-up passes have settled.
    for t in 0..100 {
        let tenant = format!("idle{t:03}");
        s.engage.tenant(&tenant).await;
        s.engage.service(&tenant, "sales", bench_service()).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = crate::stats::calls_by_command(&s.redis.url()).await;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let after = crate::stats::calls_by_command(&s.redis.url()).await;
    let idle = (after.values().sum::<f64>() - before.values().sum::<f64>()) / window;
    r.notes.push(format!(
        "service-Redis commands in {window} s idle (worker + engage serve, 101 tenants, nothing booked): {}",
        crate::stats::delta_text(&before, &after)
    ));
    r.add(Figure {
        budget: Some("≤ 0.2 per node, any tenant count".into()),
        ges: Some("~50 per tenant".into()),
        met: Some(idle <= 0.2),
        ..fig(
            &format!("Service-Redis commands per second idle: worker + engage serve, 101 tenants, {window} s"),
            idle,
            "commands/s",
        )
    });

    idle
}

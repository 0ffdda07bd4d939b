//! PostgreSQL at 10 million callbacks (`bench --only scale`): the same measurements on a
//! near-empty `callbacks` table and after loading it with 10,000,000 rows (200,000 with
//! `--quick`) — lone create latency, retrieve latency, a burst of due callbacks claimed and
//! submitted by the worker, and the retention purge — plus the table's size. The figures decide
//! whether time partitioning of `callbacks` pays (docs/SCALING.md#partitioning).
//!
//! The loaded rows copy a real callback's row (every column, whatever the migrations add) and
//! vary what the indexes see: 1,000 tenants (40 % the bench tenant), desired times spread over
//! the 30 days past (COMPLETED, four history rows each: retention deletes them by cascade) and
//! 1 % SCHEDULED up to 14 days ahead. Secondary indexes are dropped during the load and rebuilt
//! from their own definitions, as an operator would bulk-load.

use std::time::{Duration, Instant};

use harness::{TestEnv, WorkerProc};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::{
    dispatch::{Stack, create_all, lateness_of, pct, stack, stream_len},
    scenarios::{Figure, Options, Results, fig, phone},
};

/// What one pass measures.
#[derive(Debug, Default)]
struct Sample {
    create: Vec<f64>,
    wal_per_create: f64,
    retrieve: Vec<f64>,
    burst_ms: f64,
    burst_n: usize,
    purge_rows_per_s: f64,
    purge_batch_ms: Vec<f64>,
}

/// The worker's retention batch (`worker::maintenance::BATCH`).
const PURGE_BATCH: i64 = 500;

pub(crate) async fn scale(opts: &Options, r: &mut Results) -> anyhow::Result<()> {
    let rows: i64 = if opts.repeats == 1 {
        200_000
    } else {
        10_000_000
    };
    println!("scale: PostgreSQL at {rows} callbacks");
    let s = stack().await;
    // The bench purges by itself (timed); the worker's own retention must not race it.
    let worker = WorkerProc::start(&s.env, &[("WORKER_RETENTION_DAYS", "36500".into())]).await;
    let pg = s.env.pg().await;
    let template = template_row(&s).await?;
    load(&pg, &template, 0, 40_000).await?;
    let small = measure(&s, &pg, 1).await?;
    let t = Instant::now();
    load(&pg, &template, 40_000, rows).await?;
    let load_s = t.elapsed().as_secs_f64();
    pg.batch_execute("ANALYZE callbacks; ANALYZE callback_events")
        .await?;
    let big = measure(&s, &pg, 2).await?;
    report(r, rows, &small, &big);
    sizes(r, &pg, rows, load_s).await?;
    drop(worker);
    let _ = pg
        .batch_execute("TRUNCATE callbacks CASCADE; CHECKPOINT")
        .await;
    Ok(())
}

/// One real callback created through the API: the loaded rows copy its columns.
async fn template_row(s: &Stack) -> anyhow::Result<String> {
    let far = (Timestamp::now() + SignedDuration::from_hours(24 * 10)).to_string();
    let (status, body) = s
        .engage
        .post(
            &s.key,
            "/engagement/v3/callbacks/create",
            json!({"serviceName": "sales", "phoneNumber": phone(9_999_999), "desiredTime": far}),
        )
        .await;
    anyhow::ensure!(status == 200, "template create: {status} {body}");
    body["data"]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("template create: no id in {body}"))
}

/// The column list of `callbacks` and, per column, the expression of a loaded row (`g` is the
/// row number, `t` the template row).
async fn select_list(pg: &tokio_postgres::Client) -> anyhow::Result<(String, String)> {
    let cols: Vec<String> = pg
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'callbacks'
             ORDER BY ordinal_position",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Row g: live (1 %) ones desired 1–14 days ahead, the rest over the 30 days past.
    let desired = "(CASE WHEN g % 100 = 0 THEN now() + make_interval(secs => 86400 + (g * 7919) % (13 * 86400)) \
                   ELSE now() - make_interval(secs => 3600 + (g * 7919) % (30 * 86400)) END)";
    let live = "(g % 100 = 0)";
    let exprs: Vec<String> = cols
        .iter()
        .map(|c| match c.as_str() {
            "id" => "gen_random_uuid()".into(),
            "tenant_id" => {
                "(CASE WHEN g % 5 < 2 THEN t.tenant_id ELSE 'scale' || (g % 999) END)".into()
            }
            "state" => format!("(CASE WHEN {live} THEN 'SCHEDULED' ELSE 'COMPLETED' END)"),
            "reason" => format!("(CASE WHEN {live} THEN NULL ELSE 'AGENT_CONNECTED' END)"),
            "phone_number" | "phone_e164" => {
                "('+1212' || lpad((2000000 + g % 7000000)::text, 7, '0'))".into()
            }
            "desired_time" | "dispatch_at" => desired.into(),
            "submitted_at" => format!("(CASE WHEN {live} THEN NULL ELSE {desired} END)"),
            "created_at" => format!("({desired} - interval '1 hour')"),
            "updated_at" => desired.into(),
            other => format!("t.{other}"),
        })
        .collect();
    Ok((cols.join(", "), exprs.join(", ")))
}

/// Loads rows `from..to` (copies of `template`), with four history rows per finished one,
/// secondary indexes dropped during the load and rebuilt after.
async fn load(
    pg: &tokio_postgres::Client,
    template: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<()> {
    let (cols, exprs) = select_list(pg).await?;
    let indexes: Vec<(String, String)> = pg
        .query(
            "SELECT indexname::text, indexdef FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename IN ('callbacks', 'callback_events')
               AND indexname NOT LIKE '%pkey'",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, _) in &indexes {
        pg.batch_execute(&format!("DROP INDEX {name}")).await?;
    }
    let id: uuid::Uuid = template.parse()?;
    let chunk = 500_000;
    let mut lo = from;
    while lo < to {
        let hi = (lo + chunk).min(to);
        let t = Instant::now();
        pg.execute(
            &format!(
                "WITH ins AS (INSERT INTO callbacks ({cols})
                   SELECT {exprs} FROM callbacks t, generate_series($2::bigint, $3::bigint - 1) g
                   WHERE t.id = $1 RETURNING id, state, desired_time)
                 INSERT INTO callback_events (callback_id, at, state, reason, source)
                 SELECT ins.id, ins.desired_time - make_interval(secs => 60 * (4 - k)),
                        (ARRAY['QUEUED','ROUTING','PROCESSING','COMPLETED'])[k],
                        CASE WHEN k = 4 THEN 'AGENT_CONNECTED' END, 'bench'
                 FROM ins, generate_series(1, 4) k WHERE ins.state = 'COMPLETED'"
            ),
            &[&id, &lo, &hi],
        )
        .await?;
        println!(
            "  loaded {hi} of {to} ({:.1} s for {})",
            t.elapsed().as_secs_f64(),
            hi - lo
        );
        lo = hi;
    }
    let t = Instant::now();
    for (_, def) in &indexes {
        pg.batch_execute(def).await?;
    }
    println!(
        "  {} indexes rebuilt in {:.0} s",
        indexes.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Lone creates, retrieves, a due burst and the purge, on the table as it is.
async fn measure(s: &Stack, pg: &tokio_postgres::Client, pass: u64) -> anyhow::Result<Sample> {
    let lsn = "SELECT pg_current_wal_lsn()::text";
    let before: String = pg.query_one(lsn, &[]).await?.get(0);
    let create = lone_creates(s, pass).await?;
    let after: String = pg.query_one(lsn, &[]).await?.get(0);
    let wal: f64 = pg
        .query_one(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::float8",
            &[&after, &before],
        )
        .await?
        .get(0);
    let mut out = Sample {
        wal_per_create: wal / 330.0,
        create,
        retrieve: retrieves(s, pg).await?,
        ..Default::default()
    };
    (out.burst_ms, out.burst_n) = burst(s, pass).await?;
    (out.purge_rows_per_s, out.purge_batch_ms) = purge(&s.env).await?;
    Ok(out)
}

/// 300 scheduled creates (10 days ahead, so none is dispatched during the run) one at a time,
/// each answered before the next, after 30 unmeasured: milliseconds each.
async fn lone_creates(s: &Stack, pass: u64) -> anyhow::Result<Vec<f64>> {
    let url = format!("{}/engagement/v3/callbacks/create", s.engage.external);
    let far = (Timestamp::now() + SignedDuration::from_hours(24 * 10)).to_string();
    let mut ms = Vec::new();
    for i in 0..330u64 {
        let body = json!({"serviceName": "sales", "phoneNumber": phone(pass * 1_000_000 + i), "desiredTime": far});
        let t = Instant::now();
        let resp = s
            .engage
            .http
            .post(&url)
            .header("x-api-key", &s.key)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "lone create: {}", resp.status());
        let _ = resp.bytes().await?;
        if i >= 30 {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(ms)
}

/// 300 retrieves of loaded or created callbacks of the bench tenant, one at a time.
async fn retrieves(s: &Stack, pg: &tokio_postgres::Client) -> anyhow::Result<Vec<f64>> {
    let ids: Vec<String> = pg
        .query(
            "SELECT id::text FROM callbacks TABLESAMPLE SYSTEM (1)
             WHERE tenant_id = 'bench' LIMIT 300",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no callback to retrieve");
    let url = format!("{}/engagement/v3/callbacks/retrieve", s.engage.external);
    let mut ms = Vec::new();
    for id in ids.iter().cycle().take(300) {
        let t = Instant::now();
        let resp = s
            .engage
            .http
            .post(&url)
            .header("x-api-key", &s.key)
            .json(&json!({ "id": id }))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "retrieve: {}", resp.status());
        let _ = resp.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(ms)
}

/// 2,000 callbacks due at one instant, dispatched by the one worker into the (emptied) voice
/// stream: milliseconds until the last is in, and how many arrived of how many booked.
async fn burst(s: &Stack, pass: u64) -> anyhow::Result<(f64, usize)> {
    let n = 2_000u64;
    let stream = s.env.voice_stream().to_string();
    let mut voice = s.voice.conn().await;
    redis::cmd("DEL")
        .arg(&stream)
        .query_async::<()>(&mut voice)
        .await?;
    let t1 = Timestamp::now() + SignedDuration::from_secs(20);
    let bodies: Vec<Value> = (0..n)
        .map(|i| json!({"serviceName": "sales", "phoneNumber": phone(pass * 1_000_000 + 500 + i), "desiredTime": t1.to_string()}))
        .collect();
    let booked = create_all(&s.engage, &s.key, bodies).await;
    anyhow::ensure!(booked as u64 == n, "burst: {booked} of {n} booked");
    anyhow::ensure!(Timestamp::now() < t1, "burst booking took longer than 20 s");
    let deadline = Instant::now() + Duration::from_secs(120);
    while stream_len(&s.voice.url(), &stream).await < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut late = lateness_of(&s.voice.url(), &stream).await;
    Ok((pct(&mut late, 1.0), late.len()))
}

/// The worker's retention statement (`shared::db::dispatch::purge`, 14 days, batches of 500)
/// run 40 times: rows deleted per second and the time of each batch.
async fn purge(env: &TestEnv) -> anyhow::Result<(f64, Vec<f64>)> {
    let pool = shared::db::pool(&shared::config::DbConfig::from_vars(env.vars.clone())?)?;
    let pg = pool.get().await?;
    let (mut gone, mut batches) = (0u64, Vec::new());
    let t = Instant::now();
    for _ in 0..40 {
        let b = Instant::now();
        let n = shared::db::dispatch::purge(&pg, 14, PURGE_BATCH)
            .await?
            .len();
        batches.push(b.elapsed().as_secs_f64() * 1000.0);
        gone += n as u64;
        if n < PURGE_BATCH as usize {
            break;
        }
    }
    Ok((gone as f64 / t.elapsed().as_secs_f64(), batches))
}

fn report(r: &mut Results, rows: i64, small: &Sample, big: &Sample) {
    let m = rows as f64 / 1e6;
    let pair = |name: &str, a: &[f64], b: &[f64]| {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        fig(
            &format!(
                "{name}: at 40k rows p50 {:.2} / p99 {:.2} ms; at {m:.1} M rows p50 {:.2} ms; p99",
                pct(&mut a, 0.5),
                pct(&mut a, 0.99),
                pct(&mut b, 0.5)
            ),
            pct(&mut b, 0.99),
            "ms",
        )
    };
    r.add(pair(
        "Scale: lone scheduled create (one at a time, durable)",
        &small.create,
        &big.create,
    ));
    r.add(fig(
        &format!(
            "Scale: WAL per lone scheduled create (whole server, so an upper bound): at 40k rows {:.0} B; at {m:.1} M rows",
            small.wal_per_create
        ),
        big.wal_per_create,
        "bytes",
    ));
    r.add(pair(
        "Scale: retrieve (one at a time)",
        &small.retrieve,
        &big.retrieve,
    ));
    r.add(fig(
        &format!(
            "Scale: burst of 2000 due at once, 1 worker: all in after {:.0} ms at 40k rows ({} in); at {m:.1} M rows ({} in), ms",
            small.burst_ms, small.burst_n, big.burst_n
        ),
        big.burst_ms,
        "ms",
    ));
    r.add(pair(
        "Scale: retention purge batch of 500 (DELETE … RETURNING, events by cascade)",
        &small.purge_batch_ms,
        &big.purge_batch_ms,
    ));
    r.add(Figure {
        budget: Some("≥ 116 rows/s (10 M callbacks a day)".into()),
        met: Some(big.purge_rows_per_s >= 116.0),
        ..fig(
            &format!(
                "Scale: retention purge rate, one worker back to back: at 40k rows {:.0} rows/s; at {m:.1} M rows",
                small.purge_rows_per_s
            ),
            big.purge_rows_per_s,
            "rows/s",
        )
    });
}

async fn sizes(
    r: &mut Results,
    pg: &tokio_postgres::Client,
    rows: i64,
    load_s: f64,
) -> anyhow::Result<()> {
    let row = pg
        .query_one(
            "SELECT pg_table_size('callbacks')::float8, pg_indexes_size('callbacks')::float8,
                    pg_total_relation_size('callback_events')::float8,
                    (SELECT count(*) FROM callbacks)::float8",
            &[],
        )
        .await?;
    let (table, idx, events, count): (f64, f64, f64, f64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let gb = |b: f64| b / 1e9;
    r.add(fig(
        &format!(
            "Scale: PostgreSQL size at {count:.0} callbacks: table {:.2} GB + indexes {:.2} GB + history (4 rows per finished callback) {:.2} GB; per callback, all included",
            gb(table),
            gb(idx),
            gb(events)
        ),
        (table + idx + events) / count.max(1.0),
        "bytes",
    ));
    r.notes.push(format!(
        "scale: {rows} rows loaded in {load_s:.0} s (generate_series, secondary indexes dropped then rebuilt)"
    ));
    Ok(())
}

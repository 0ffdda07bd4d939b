//! Evidence of a failing audit: for each lost or duplicated callback (at most
//! [`MAX_CALLBACKS`]), everything the stores and the client hold about it, so that one failed
//! run tells a real loss from an audit artefact (tests/chaos/README.md, "Evidence"):
//! the client's ledger (acknowledged when, cancel accepted when), the row (state, reason,
//! attempt, submitted_at, dispatch_at, expires_at, control_pending, updated_at), its events,
//! its entries in the voice and control streams, the submission and control dedupe keys of
//! every attempt (value and TTL: `cancelled` is a cancel's fence), and whether it is in the
//! schedule index or in flight.

use std::fmt::Write;

use anyhow::Context;
use uuid::Uuid;

use crate::{audit::Findings, load::Ledger, stack::Stack};

/// Callbacks described per row at most (the audit file lists every id).
const MAX_CALLBACKS: usize = 20;

/// The findings whose callbacks get evidence.
const KINDS: [&str; 2] = ["lost", "duplicated"];

/// The evidence of every lost or duplicated callback of `f`, as text ("" when none).
pub(crate) async fn collect(
    stack: &Stack,
    ledger: &Ledger,
    f: &Findings,
) -> anyhow::Result<String> {
    let ids: Vec<&String> = KINDS
        .iter()
        .filter_map(|k| f.examples.get(k))
        .flatten()
        .take(MAX_CALLBACKS)
        .collect();
    let mut out = String::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let pg = stack.env.try_pg().await.context("evidence: PostgreSQL")?;
    let voice = redis::Client::open(stack.voice.url())?;
    let mut conn = voice.get_multiplexed_async_connection().await?;
    let entries = harness::stream_entries(&mut conn, stack.env.voice_stream()).await;
    let controls = harness::stream_entries(&mut conn, &stack.env.vars["CONTROL_STREAM"]).await;
    for id in ids {
        let _ = writeln!(out, "callback {id}");
        client_view(&mut out, ledger, id);
        let attempt = row(&mut out, &pg, id).await?;
        let mut max_attempt = attempt;
        for (what, list) in [("voice entry", &entries), ("control entry", &controls)] {
            for (entry, fields) in list
                .iter()
                .filter(|(_, f)| f.get("callback_id") == Some(id))
            {
                let n: i16 = fields
                    .get("attempt")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0);
                max_attempt = max_attempt.max(n);
                let action = fields.get("action").map_or("", String::as_str);
                let _ = writeln!(out, "  {what} {entry}: attempt {n} {action}");
            }
        }
        dedupe_keys(&mut out, stack, &mut conn, id, max_attempt).await?;
        index(&mut out, stack, id).await;
    }
    Ok(out)
}

/// What the client saw of `id`.
fn client_view(out: &mut String, ledger: &Ledger, id: &str) {
    let acked = ledger.acked.iter().find(|a| a.id == id);
    let cancel = ledger.cancelled.iter().find(|c| c.id == id);
    let _ = writeln!(
        out,
        "  client: {}; {}",
        acked.map_or(
            "create not acknowledged (a 503, or never answered)".into(),
            |a| { format!("acknowledged, due at {} ms", a.due_ms) }
        ),
        cancel.map_or("no cancel accepted".into(), |c| {
            format!("cancel accepted at {} ms", c.answered_ms)
        })
    );
}

/// The row and its events; returns its attempt (0 when the row is missing).
async fn row(out: &mut String, pg: &tokio_postgres::Client, id: &str) -> anyhow::Result<i16> {
    let r = pg
        .query_opt(
            "SELECT state, reason, attempt, submitted_at::text, dispatch_at::text,
                    expires_at::text, control_pending, updated_at::text
             FROM callbacks WHERE id = $1::text::uuid",
            &[&id],
        )
        .await?;
    let Some(r) = r else {
        let _ = writeln!(out, "  row: missing from PostgreSQL");
        return Ok(0);
    };
    let attempt: i16 = r.get(2);
    let _ = writeln!(
        out,
        "  row: state {} reason {:?} attempt {attempt} submitted_at {:?} dispatch_at {:?} \
         expires_at {:?} control_pending {} updated_at {:?}",
        r.get::<_, String>(0),
        r.get::<_, Option<String>>(1),
        r.get::<_, Option<String>>(3),
        r.get::<_, Option<String>>(4),
        r.get::<_, Option<String>>(5),
        r.get::<_, bool>(6),
        r.get::<_, Option<String>>(7),
    );
    let events = pg
        .query(
            "SELECT at::text, state, reason, source, attempt FROM callback_events
             WHERE callback_id = $1::text::uuid ORDER BY at",
            &[&id],
        )
        .await?;
    for e in events {
        let _ = writeln!(
            out,
            "  event at {}: {} {:?} from {} (attempt {:?})",
            e.get::<_, String>(0),
            e.get::<_, String>(1),
            e.get::<_, Option<String>>(2),
            e.get::<_, String>(3),
            e.get::<_, Option<i16>>(4),
        );
    }
    Ok(attempt)
}

/// The submission and control dedupe keys of attempts 1..=`attempts`: value and TTL.
async fn dedupe_keys(
    out: &mut String,
    stack: &Stack,
    conn: &mut redis::aio::MultiplexedConnection,
    id: &str,
    attempts: i16,
) -> anyhow::Result<()> {
    let uuid: Uuid = id.parse()?;
    let streams = [
        (stack.env.voice_stream(), "sub"),
        (stack.env.vars["CONTROL_STREAM"].as_str(), "ctl"),
    ];
    for n in 1..=attempts.max(1) {
        for (stream, kind) in streams {
            let key = shared::redis::voice::dedupe_key(stream, kind, uuid, n);
            let (value, ttl): (Option<String>, i64) = redis::pipe()
                .cmd("GET")
                .arg(&key)
                .cmd("TTL")
                .arg(&key)
                .query_async(conn)
                .await?;
            let _ = writeln!(out, "  dedupe key {key}: {value:?} (ttl {ttl} s)");
        }
    }
    Ok(())
}

/// Whether `id` is in its schedule shard or in flight (service Redis).
async fn index(out: &mut String, stack: &Stack, id: &str) {
    let Ok(uuid) = id.parse::<Uuid>() else {
        return;
    };
    let shards = stack
        .env
        .vars
        .get("REDIS_SCHEDULE_SHARDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let keys = shared::redis::Keys::new(&stack.env.vars["REDIS_PREFIX"], shards);
    let shard = keys.shard_of(&uuid);
    for (what, key) in [
        ("schedule", keys.sched(shard)),
        ("in flight", keys.inflight(shard)),
    ] {
        let score = stack.redis.zscore(&key, id).await;
        let _ = writeln!(out, "  {what} ({key}): {score:?}");
    }
}

//! What a test reads back to check a promise: the voice platform's streams (hand-offs and
//! control entries, waiting for N with a deadline) and callback rows in PostgreSQL.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use crate::TestEnv;

/// One stream entry: (entry id, fields).
pub type Entry = (String, BTreeMap<String, String>);

/// Every entry of a stream as (entry id, fields).
pub async fn stream_entries(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("XRANGE");
        let n = page.len();
        for (id, fields) in page {
            start = format!("({id}");
            out.push((id, fields.into_iter().collect()));
        }
        if n < 1000 {
            return out;
        }
    }
}

/// Entries of `stream` on the voice Redis at `voice_url`: (total, distinct callback ids,
/// entries per callback id).
pub async fn stream_census(
    voice_url: &str,
    stream: &str,
) -> (usize, usize, BTreeMap<String, usize>) {
    let mut conn = redis::Client::open(voice_url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("voice connect");
    census_of(&stream_entries(&mut conn, stream).await)
}

fn census_of(entries: &[Entry]) -> (usize, usize, BTreeMap<String, usize>) {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for (_, f) in entries {
        *per.entry(f.get("callback_id").cloned().unwrap_or_default())
            .or_default() += 1;
    }
    (entries.len(), per.len(), per)
}

/// `INFO commandstats` of a Redis: (command, calls) per command, the command without its
/// `cmdstat_` prefix (subcommands as Redis names them, e.g. `config|resetstat`).
pub async fn commandstats(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, u64)> {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    parse_commandstats(&stats)
}

/// The (command, calls) pairs of an `INFO commandstats` text (see [`commandstats`]).
pub fn parse_commandstats(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest
                .split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// The calls of every command not starting with one of `skip` (from [`commandstats`]): the
/// total, and `command=calls` per command for messages.
pub async fn command_total(
    conn: &mut redis::aio::MultiplexedConnection,
    skip: &[&str],
) -> (u64, Vec<String>) {
    let counted: Vec<(String, u64)> = commandstats(conn)
        .await
        .into_iter()
        .filter(|(name, _)| !skip.iter().any(|s| name.starts_with(s)))
        .collect();
    let total = counted.iter().map(|(_, calls)| calls).sum();
    let by = counted.iter().map(|(n, c)| format!("{n}={c}")).collect();
    (total, by)
}

impl TestEnv {
    /// The control stream name of this environment.
    pub fn control_stream(&self) -> &str {
        &self.vars["CONTROL_STREAM"]
    }

    /// [`stream_census`] of this environment's voice stream: (total, distinct, per id).
    pub async fn census(&self) -> (usize, usize, BTreeMap<String, usize>) {
        let entries = stream_entries(&mut self.voice().await, self.voice_stream()).await;
        census_of(&entries)
    }

    /// Every hand-off on this environment's voice stream.
    pub async fn handoffs(&self) -> Vec<Entry> {
        stream_entries(&mut self.voice().await, self.voice_stream()).await
    }

    /// Every entry of this environment's control stream.
    pub async fn controls(&self) -> Vec<Entry> {
        stream_entries(&mut self.voice().await, self.control_stream()).await
    }

    /// The `callback_id` of every entry of `stream` on the voice Redis, in stream order.
    pub async fn ids_in(&self, stream: &str) -> Vec<String> {
        stream_entries(&mut self.voice().await, stream)
            .await
            .into_iter()
            .map(|(_, f)| f["callback_id"].clone())
            .collect()
    }

    /// Waits until the voice stream holds at least `n` hand-offs; panics after `within`.
    pub async fn wait_handoffs(&self, n: usize, within: Duration) -> Vec<Entry> {
        let started = Instant::now();
        loop {
            let entries = self.handoffs().await;
            if entries.len() >= n {
                return entries;
            }
            assert!(
                started.elapsed() < within,
                "{} of {n} hand-offs after {within:?}",
                entries.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every callback id in the schedule index of a standalone service Redis (`shards` shards).
    pub async fn indexed(&self, shards: usize) -> Vec<String> {
        let mut redis = self.redis().await;
        let mut all = Vec::new();
        for shard in 0..shards {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(format!("{{{}:sched:{shard}}}", self.id))
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .expect("ZRANGE");
            all.extend(members);
        }
        all
    }

    /// One number from PostgreSQL (`SELECT count(*) …`), on this environment's schema.
    pub async fn count(&self, sql: &str) -> i64 {
        self.pg()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Number of callbacks whose current attempt reached the voice stream.
    pub async fn submitted_count(&self) -> i64 {
        self.count("SELECT count(*) FROM callbacks WHERE submitted_at IS NOT NULL")
            .await
    }

    /// Polls until `n` callbacks are submitted or `timeout` passes; returns the last count.
    pub async fn wait_submitted(&self, n: i64, timeout: Duration) -> i64 {
        let started = Instant::now();
        loop {
            let c = self.submitted_count().await;
            if c >= n || started.elapsed() > timeout {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until every callback of `ids` reached the voice stream (its row says submitted);
    /// the time that took, or `None` once `within` passed.
    pub async fn wait_sent(&self, ids: &[String], within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        let pg = self.pg().await;
        let sql = "SELECT count(*) FROM callbacks \
                   WHERE id = ANY($1::text[]::uuid[]) AND submitted_at IS NOT NULL";
        while started.elapsed() < within {
            let sent: i64 = pg.query_one(sql, &[&ids]).await.expect("count sent").get(0);
            if sent as usize == distinct.len() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        None
    }

    /// (state, attempt, submitted) of one callback, from PostgreSQL.
    pub async fn row(&self, id: &str) -> (String, i16, bool) {
        let r = self
            .pg()
            .await
            .query_one(
                "SELECT state, attempt, submitted_at IS NOT NULL FROM callbacks WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .expect("callback row");
        (r.get(0), r.get(1), r.get(2))
    }
}

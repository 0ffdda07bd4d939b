//! The audit of a row, from PostgreSQL (the truth), the voice streams and the client's ledger.
//! Definitions (see tests/chaos/README.md):
//! - lost: an acknowledged create missing from PostgreSQL, or an attempt PostgreSQL holds as
//!   submitted that has no entry in the voice stream;
//! - duplicated: extra entries of one (callback, attempt) in the voice stream;
//! - cancelled-but-dialled: an accepted cancel of a callback whose current attempt has a voice
//!   entry but no control entry, or with any voice entry added after the cancel was answered;
//! - stuck: due more than 60 s ago and not in the voice stream (by PostgreSQL's dispatch time
//!   or by the time the client asked for), handed off more than 60 s after the time the client
//!   asked for (first attempt), or QUEUED/ROUTING more than 60 s past its TTL;
//! - queue-view mismatches: the symmetric difference between the service's queue view and the
//!   submitted QUEUED/ROUTING callbacks in PostgreSQL.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use jiff::Timestamp;

use crate::{
    load::Ledger,
    stack::{SERVICE, Stack, TENANT},
};

/// Grace before an overdue callback counts as stuck, ms.
const STUCK_AFTER_MS: i64 = 60_000;

/// One audit's findings.
#[derive(Debug, Clone, Default)]
pub(crate) struct Findings {
    /// Creates the client saw answered 200 (the ledger the audit checks against).
    pub(crate) acked: usize,
    /// Acknowledged creates missing from PostgreSQL, plus attempts recorded as submitted with
    /// no voice entry (module doc).
    pub(crate) lost: usize,
    /// Voice entries beyond the first of one (callback, attempt).
    pub(crate) duplicated: usize,
    /// Accepted cancels whose callback was (or may still be) dialled (module doc).
    pub(crate) cancelled_dialled: usize,
    /// Callbacks more than 60 s late into the voice stream, or past their TTL (module doc).
    pub(crate) stuck: usize,
    /// Queue-view members wrong either way.
    pub(crate) view_mismatch: usize,
    /// Due callbacks not yet in the voice stream (the backlog).
    pub(crate) backlog: usize,
    /// The ids behind each finding (the notes show a few, the row's audit file all).
    pub(crate) examples: BTreeMap<&'static str, Vec<String>>,
}

impl Findings {
    /// Nothing wrong and nothing left to dispatch.
    pub(crate) fn holds(&self) -> bool {
        self.clean() && self.backlog == 0 && self.view_mismatch == 0
    }

    /// No lost, duplicated, cancelled-but-dialled or stuck callback, views equal.
    pub(crate) fn clean(&self) -> bool {
        self.lost + self.duplicated + self.cancelled_dialled + self.stuck + self.view_mismatch == 0
    }

    fn example(&mut self, what: &'static str, id: &str) {
        self.examples.entry(what).or_default().push(id.to_string());
    }
}

/// One callback row as the audit needs it.
struct Row {
    state: String,
    reason: Option<String>,
    attempt: i16,
    submitted: bool,
    due: bool,
    overdue: bool,
    past_ttl: bool,
}

impl Row {
    fn cancelled_unsubmitted(&self) -> bool {
        self.state == "COMPLETED" && self.reason.as_deref() == Some("CANCELLED") && !self.submitted
    }

    /// Attempts that must be in the voice stream.
    fn required_attempts(&self) -> std::ops::RangeInclusive<i16> {
        1..=if self.submitted {
            self.attempt
        } else {
            self.attempt - 1
        }
    }
}

async fn rows(stack: &Stack) -> anyhow::Result<HashMap<String, Row>> {
    let client = stack
        .env
        .try_pg()
        .await
        .context("audit: PostgreSQL connect")?;
    let sql = "SELECT id::text, state, reason, attempt, submitted_at IS NOT NULL,
                      dispatch_at <= now(), dispatch_at < now() - make_interval(secs => $1),
                      COALESCE(state IN ('QUEUED','ROUTING') AND expires_at < now() - make_interval(secs => $1), false)
               FROM callbacks";
    let secs = (STUCK_AFTER_MS / 1000) as f64;
    let out = client.query(sql, &[&secs]).await?;
    Ok(out
        .into_iter()
        .map(|r| {
            (
                r.get(0),
                Row {
                    state: r.get(1),
                    reason: r.get(2),
                    attempt: r.get(3),
                    submitted: r.get(4),
                    due: r.get(5),
                    overdue: r.get(6),
                    past_ttl: r.get(7),
                },
            )
        })
        .collect())
}

/// Voice entries: (callback id, attempt) → entry times (ms).
type Entries = HashMap<(String, i16), Vec<i64>>;

async fn streams(stack: &Stack) -> anyhow::Result<(Entries, BTreeSet<(String, i16)>)> {
    let client = redis::Client::open(stack.voice.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut voice = Entries::new();
    for (entry, f) in harness::stream_entries(&mut conn, stack.env.voice_stream()).await {
        let ms: i64 = entry.split('-').next().unwrap_or("0").parse()?;
        let id = f.get("callback_id").cloned().unwrap_or_default();
        let attempt: i16 = f.get("attempt").map_or(Ok(0), |a| a.parse())?;
        voice.entry((id, attempt)).or_default().push(ms);
    }
    let control = harness::stream_entries(&mut conn, &stack.env.vars["CONTROL_STREAM"])
        .await
        .into_iter()
        .filter(|(_, f)| f.get("action").map(String::as_str) == Some("cancel"))
        .filter_map(|(_, f)| {
            let attempt = f.get("attempt")?.parse().ok()?;
            Some((f.get("callback_id")?.clone(), attempt))
        })
        .collect();
    Ok((voice, control))
}

/// The service's queue view key (layout of shared/src/redis/keys.rs `Keys::queue`).
fn view_key(stack: &Stack) -> String {
    format!(
        "{{{}:q:{TENANT}:{SERVICE}}}",
        stack.env.vars["REDIS_PREFIX"]
    )
}

/// Audits the row now.
pub(crate) async fn audit(stack: &Stack, ledger: &Ledger) -> anyhow::Result<Findings> {
    let rows = rows(stack).await?;
    let (voice, control) = streams(stack).await?;
    let view: BTreeSet<String> = stack
        .redis
        .view_waiting(&view_key(stack))
        .await
        .context("audit: queue view")?
        .into_iter()
        .collect();
    let now = Timestamp::now().as_millisecond();
    let mut f = Findings {
        acked: ledger.acked.len(),
        ..Findings::default()
    };
    let dialled: HashMap<&str, Vec<i64>> =
        voice.iter().fold(HashMap::new(), |mut m, ((id, _), at)| {
            m.entry(id.as_str()).or_default().extend(at);
            m
        });
    lost_and_backlog(&mut f, ledger, &rows, &voice, &dialled, now);
    for ((id, _), at) in &voice {
        if at.len() > 1 {
            f.duplicated += at.len() - 1;
            f.example("duplicated", id);
        }
    }
    for c in &ledger.cancelled {
        let Some(at) = dialled.get(c.id.as_str()) else {
            continue;
        };
        let late = at.iter().map(|&ms| ms - c.answered_ms).max().unwrap_or(0);
        // The attempt the cancel stopped (a cancel does not change it).
        let attempt = rows.get(&c.id).map_or(1, |r| r.attempt);
        let handed_off = voice.contains_key(&(c.id.clone(), attempt));
        if handed_off && !control.contains(&(c.id.clone(), attempt)) {
            f.cancelled_dialled += 1;
            let what = format!(
                "{} (dialled {} ms before the cancel was answered)",
                c.id, -late
            );
            f.example("cancelled-but-dialled (no control entry)", &what);
        } else if late > 0 {
            f.cancelled_dialled += 1;
            let what = format!("{} (dialled {late} ms after the cancel was answered)", c.id);
            f.example("cancelled-but-dialled (dialled after the cancel)", &what);
        }
    }
    let waiting: BTreeSet<String> = rows
        .iter()
        .filter(|(_, r)| r.submitted && (r.state == "QUEUED" || r.state == "ROUTING"))
        .map(|(id, _)| id.clone())
        .collect();
    for id in waiting.symmetric_difference(&view) {
        f.view_mismatch += 1;
        f.example("queue-view mismatch", id);
    }
    Ok(f)
}

/// Lost, stuck and the backlog.
fn lost_and_backlog(
    f: &mut Findings,
    ledger: &Ledger,
    rows: &HashMap<String, Row>,
    voice: &Entries,
    dialled: &HashMap<&str, Vec<i64>>,
    now: i64,
) {
    let mut lost = BTreeSet::new();
    let mut stuck = BTreeSet::new();
    let mut backlog = BTreeSet::new();
    let mut late = BTreeSet::new();
    for a in &ledger.acked {
        let Some(row) = rows.get(&a.id) else {
            lost.insert(a.id.as_str());
            continue;
        };
        // Handed off, but more than 60 s after the time the client asked for.
        if let Some(first) = voice.get(&(a.id.clone(), 1)).and_then(|at| at.iter().min())
            && first - a.due_ms > STUCK_AFTER_MS
        {
            late.insert(a.id.as_str());
        }
        // The client's view: asked for now (or at its desired time), never handed off.
        if a.due_ms <= now && !dialled.contains_key(a.id.as_str()) && !row.cancelled_unsubmitted() {
            backlog.insert(a.id.as_str());
            if a.due_ms < now - STUCK_AFTER_MS {
                stuck.insert(a.id.as_str());
            }
        }
    }
    for (id, row) in rows {
        if row
            .required_attempts()
            .any(|n| !voice.contains_key(&(id.clone(), n)))
        {
            lost.insert(id.as_str());
        }
        let pending = !row.submitted && (row.state == "SCHEDULED" || row.state == "QUEUED");
        if pending && row.due {
            backlog.insert(id.as_str());
        }
        if (pending && row.overdue) || row.past_ttl {
            stuck.insert(id.as_str());
        }
    }
    f.stuck = stuck.union(&late).count();
    (f.lost, f.backlog) = (lost.len(), backlog.len());
    for (what, set) in [
        ("lost", &lost),
        ("stuck (not in the voice stream)", &stuck),
        (
            "stuck (reached the voice stream more than 60 s late)",
            &late,
        ),
        ("backlog", &backlog),
    ] {
        for id in set {
            f.example(what, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Acked;

    fn row(state: &str, attempt: i16, submitted: bool, due: bool, overdue: bool) -> Row {
        Row {
            state: state.into(),
            reason: None,
            attempt,
            submitted,
            due,
            overdue,
            past_ttl: false,
        }
    }

    fn acked(id: &str, due_ms: i64) -> Acked {
        Acked {
            id: id.into(),
            due_ms,
        }
    }

    /// The audit is not vacuous: each kind of break is counted.
    #[test]
    fn lost_stuck_late_and_backlog_are_counted() {
        let now = 1_000_000;
        let ledger = Ledger {
            acked: vec![
                acked("missing-from-pg", now - 1_000),
                acked("fine", now - 90_000),
                acked("never-sent", now - 90_000),
                acked("late", now - 200_000),
                acked("just-due", now - 1_000),
            ],
            ..Ledger::default()
        };
        let rows: HashMap<String, Row> = [
            ("fine", row("COMPLETED", 1, true, true, true)),
            ("never-sent", row("QUEUED", 1, false, true, true)),
            ("late", row("COMPLETED", 1, true, true, true)),
            ("just-due", row("QUEUED", 1, false, true, false)),
            ("retry-lost", row("SCHEDULED", 2, false, false, false)),
            ("marked-not-sent", row("QUEUED", 1, true, true, true)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let voice: Entries = [
            (("fine".to_string(), 1), vec![now - 89_000]),
            (("late".to_string(), 1), vec![now - 100_000]),
        ]
        .into_iter()
        .collect();
        let dialled: HashMap<&str, Vec<i64>> = voice
            .iter()
            .map(|((id, _), at)| (id.as_str(), at.clone()))
            .collect();
        let mut f = Findings::default();
        lost_and_backlog(&mut f, &ledger, &rows, &voice, &dialled, now);
        // missing-from-pg, retry-lost (attempt 1 never in the stream), marked-not-sent.
        assert_eq!(f.lost, 3, "{:?}", f.examples);
        // never-sent (overdue by both clocks), late (handed off 100 s after due).
        assert_eq!(f.stuck, 2, "{:?}", f.examples);
        // never-sent, just-due.
        assert_eq!(f.backlog, 2, "{:?}", f.examples);
        assert!(!f.holds());
    }

    #[test]
    fn a_cancel_before_hand_off_owes_nothing() {
        let mut r = row("COMPLETED", 1, false, true, true);
        r.reason = Some("CANCELLED".into());
        assert!(r.cancelled_unsubmitted());
        assert_eq!(r.required_attempts().count(), 0);
        let retried = row("SCHEDULED", 2, false, false, false);
        assert_eq!(retried.required_attempts().collect::<Vec<_>>(), vec![1]);
    }
}

//! Reconciler: PostgreSQL is the truth, the service Redis a derived copy (invariant 2;
//! docs/derived-state.md).
//!
//! **Noticing a loss.** Every `WORKER_RECONCILE_CHECK_S` (≤ 60 s) one check reads, for every
//! node that holds data (the server, or each cluster primary), `INFO server stats commandstats`
//! and compares a fingerprint with the previous one: a new `run_id` (restarted, perhaps empty;
//! a failover promotes another node), a grown `evicted_keys` (an `allkeys-*` policy dropped
//! keys), a grown flush count (`FLUSHALL`/`FLUSHDB`), or a different set of primaries. Plus one
//! `GET` of the marker key, which catches our own keys being deleted. Any difference means a
//! part of the copy may be gone, on any node, so the whole copy is repaired. The fingerprint is
//! taken *before* a rebuild, so a loss during the rebuild shows at the next check.
//!
//! **Repairing.** A rebuild puts every committed, unsubmitted callback back into the schedule
//! index where it is missing (`schedule::index_missing`: entries already indexed or in flight
//! stay as they are) and makes every queue view equal to PostgreSQL's waiting set
//! ([`repair_view`]: adds what is missing, removes strays). Both are idempotent, so several
//! workers rebuilding at once is harmless. The PostgreSQL sweep ([`crate::sweep`]) repairs
//! what single failed writes leave out in between.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use shared::{db::dispatch, metrics, redis::queue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Backoff, Signal, Worker, error::Result};

/// What the check remembers of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NodeMark {
    run_id: String,
    evicted_keys: u64,
    flushes: u64,
}

/// Node address → its mark.
type Fingerprint = BTreeMap<String, NodeMark>;

/// Runs the reconciler until `stop` fires.
pub async fn run(w: Worker, tx: mpsc::Sender<Signal>, stop: CancellationToken) {
    let check_every = Duration::from_secs(w.cfg.worker.reconcile_check_s);
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut cause = Some("start");
    let mut seen: Option<Fingerprint> = None;
    loop {
        if let Some(why) = cause {
            match rebuild(&w, &stop, why).await {
                Ok(Some(fp)) => {
                    seen = fp;
                    cause = None;
                    backoff.reset();
                    w.wake(&tx, Signal::Resync);
                }
                Ok(None) => return, // stopped
                Err(e) => {
                    tracing::warn!(error = %e, "rebuild from PostgreSQL failed; retrying");
                    if crate::sleep_or_stop(backoff.next_delay(), &stop).await {
                        return;
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(check_every) => {}
            () = w.reconcile_check.notified() => {}
        }
        match check(&w, &seen).await {
            Ok(None) => {}
            Ok(Some(why)) => {
                tracing::warn!(
                    cause = why,
                    "part of the service Redis may be lost; rebuilding"
                );
                cause = Some(why);
            }
            Err(e) => tracing::warn!(error = %e, "reconcile check failed"),
        }
    }
}

/// One check: the marker, then every node's mark. Returns why to rebuild.
async fn check(w: &Worker, seen: &Option<Fingerprint>) -> Result<Option<&'static str>> {
    let mut conn = w.redis.conn().await?;
    let marker: Option<String> = redis::cmd("GET")
        .arg(w.keys.marker())
        .query_async(&mut conn)
        .await?;
    if marker.is_none() {
        return Ok(Some("marker_missing"));
    }
    Ok(match (seen, fingerprint(w).await?) {
        (Some(seen), Some(now)) => changed(seen, &now),
        // `INFO` became allowed: start comparing from a fresh rebuild.
        (None, Some(_)) => Some("nodes_changed"),
        (_, None) => None,
    })
}

/// Every node's mark, or `None` when this Redis user may not run `INFO` (an ACL without
/// `@dangerous`, or a managed Redis that renamed it): loss detection then rests on the marker
/// key and the sweep alone, which is logged once as an error (docs/derived-state.md).
async fn fingerprint(w: &Worker) -> Result<Option<Fingerprint>> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    match w
        .redis
        .node_infos(&["server", "stats", "commandstats"])
        .await
    {
        Ok(infos) => Ok(Some(
            infos
                .into_iter()
                .map(|(node, info)| (node, mark(&info)))
                .collect(),
        )),
        Err(e) if refused(&e) => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(error = %e, "the service Redis refuses INFO: a restarted, evicted or \
                    flushed node is noticed only through the marker key; allow +info for this user");
            }
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether Redis refused the command itself (permissions, renamed or unknown command).
fn refused(e: &redis::RedisError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("noperm") || text.contains("unknown command")
}

/// The mark of one node from its `INFO` text.
fn mark(info: &str) -> NodeMark {
    let mut m = NodeMark::default();
    let calls = |rest: &str| -> u64 {
        rest.strip_prefix("calls=")
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in info.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("run_id:") {
            v.clone_into(&mut m.run_id);
        } else if let Some(v) = line.strip_prefix("evicted_keys:") {
            m.evicted_keys = v.parse().unwrap_or(0);
        } else if let Some(v) = line
            .strip_prefix("cmdstat_flushall:")
            .or_else(|| line.strip_prefix("cmdstat_flushdb:"))
        {
            m.flushes += calls(v);
        }
    }
    m
}

/// Why a rebuild is due, comparing the previous fingerprint with the current one.
fn changed(seen: &Fingerprint, now: &Fingerprint) -> Option<&'static str> {
    if !seen.keys().eq(now.keys()) {
        return Some("nodes_changed");
    }
    for (old, new) in seen.values().zip(now.values()) {
        if old.run_id != new.run_id {
            return Some("node_restarted");
        }
        if old.flushes != new.flushes {
            return Some("flushed");
        }
        if old.evicted_keys != new.evicted_keys {
            return Some("keys_evicted");
        }
    }
    None
}

/// Rebuilds the index and queue views; returns the fingerprint taken before (itself `None`
/// when `INFO` is refused; the outer `None` if stopped midway).
async fn rebuild(
    w: &Worker,
    stop: &CancellationToken,
    why: &'static str,
) -> Result<Option<Option<Fingerprint>>> {
    let started = std::time::Instant::now();
    let fp = fingerprint(w).await?;
    let mut conn = w.redis.conn().await?;
    redis::cmd("SET")
        .arg(w.keys.marker())
        .arg("1")
        .query_async::<()>(&mut conn)
        .await?;
    let scope = crate::sweep::all_within_horizon(w).await?;
    let Some(indexed) = crate::sweep::reindex(w, scope, Some(stop)).await? else {
        return Ok(None);
    };
    let mut views = 0usize;
    let services = {
        let client = w.db.get().await?;
        dispatch::view_services(&client).await?
    };
    for (tenant, service) in &services {
        if stop.is_cancelled() {
            return Ok(None);
        }
        views += repair_view(w, tenant, service).await?;
    }
    ::metrics::counter!(metrics::RECONCILE_REBUILDS, "cause" => why).increment(1);
    tracing::info!(
        cause = why,
        indexed,
        views_repaired = views,
        took_ms = started.elapsed().as_millis() as u64,
        "schedule index and queue views reconciled with PostgreSQL"
    );
    Ok(Some(fp))
}

/// Makes one service's queue view equal to the callbacks PostgreSQL says the voice platform
/// holds: adds the missing, removes the strays. The view is read *before* PostgreSQL, so a
/// callback that joins in between is only added twice (idempotent) and one that leaves in
/// between is removed; a change racing the writes below is caught by the next check of the
/// service (it changed). Returns how many members were added or removed.
pub async fn repair_view(w: &Worker, tenant: &str, service: &str) -> Result<usize> {
    let mut conn = w.redis.conn().await?;
    let held: HashSet<String> = queue::members(&mut conn, &w.keys, tenant, service)
        .await?
        .into_iter()
        .collect();
    let active = {
        let client = w.db.get().await?;
        dispatch::active_of(&client, tenant, service).await?
    };
    let wanted: HashSet<String> = active.iter().map(|a| a.id.to_string()).collect();
    let missing: Vec<(Uuid, i64)> = active
        .iter()
        .filter(|a| !held.contains(&a.id.to_string()))
        .map(|a| {
            (
                a.id,
                queue::score(a.priority, a.desired_time.as_millisecond()),
            )
        })
        .collect();
    let strays: Vec<String> = held.difference(&wanted).cloned().collect();
    queue::restore(&mut conn, &w.keys, tenant, service, &missing).await?;
    queue::remove(&mut conn, &w.keys, tenant, service, &strays).await?;
    for (action, n) in [("added", missing.len()), ("removed", strays.len())] {
        if n > 0 {
            ::metrics::counter!(metrics::QUEUE_VIEW_REPAIRED, "action" => action)
                .increment(n as u64);
        }
    }
    Ok(missing.len() + strays.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(run_id: &str, evicted: u64, flushes: u64) -> Fingerprint {
        let mark = NodeMark {
            run_id: run_id.into(),
            evicted_keys: evicted,
            flushes,
        };
        Fingerprint::from([("n1".to_string(), mark)])
    }

    #[test]
    fn info_fields_make_the_mark() {
        let info = "# Server\r\nrun_id:abc\r\n# Stats\r\nevicted_keys:7\r\n# Commandstats\r\n\
                    cmdstat_flushall:calls=2,usec=5,usec_per_call=2.5\r\ncmdstat_flushdb:calls=1,usec=1\r\n";
        assert_eq!(
            mark(info),
            NodeMark {
                run_id: "abc".into(),
                evicted_keys: 7,
                flushes: 3
            }
        );
    }

    #[test]
    fn every_kind_of_loss_is_a_change() {
        let base = fp("a", 0, 0);
        assert_eq!(changed(&base, &base), None);
        assert_eq!(changed(&base, &fp("b", 0, 0)), Some("node_restarted"));
        assert_eq!(changed(&base, &fp("a", 1, 0)), Some("keys_evicted"));
        assert_eq!(changed(&base, &fp("a", 0, 1)), Some("flushed"));
        let mut two = base.clone();
        two.insert("n2".into(), NodeMark::default());
        assert_eq!(changed(&base, &two), Some("nodes_changed"));
    }
}

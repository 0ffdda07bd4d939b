//! The dispatch loop.
//!
//! Idle path: the loop knows each shard's earliest due score and lease deadline (every claim
//! returns them) and sleeps until the earliest of those, a wake-up from [`crate::wake`], or the
//! safety poll (`WORKER_SAFETY_POLL_S`, which reads only the shards' heads). Nothing is polled
//! per callback or per minute while callbacks wait.
//!
//! Shards are independent: a shard whose pass fails (its cluster node unreachable, a row that
//! does not load) is retried on a backoff of its own ([`Shards::failed`]), and after every
//! round of passes the loop takes in the wake-ups that arrived and every shard whose time has
//! come ([`Shards::catch_up`]), so neither one failing shard nor one shard with a backlog holds
//! up the others (docs/derived-state.md#a-failing-shard).
//!
//! Busy path, per shard ([`mod@pass`]): claim up to `WORKER_BATCH` due ids (lease
//! `WORKER_LEASE_MS`), load the rows, drop what is no longer pending (cancelled, already
//! submitted, purged), hand back what pacing holds, submit the rest in one deduplicating script
//! and mark them submitted in PostgreSQL. Every claim of the pass is then settled once
//! ([`settle`]): released, handed back to the schedule, or kept in flight until its lease runs
//! out. A failed submission (voice Redis down) counts `CB_SUBMIT_FAILED`, hands the batch back
//! as still due and backs off; the dedupe key makes the later retry safe even if the failed
//! call had in fact reached Redis.

pub mod pass;
pub mod settle;

use std::{sync::atomic::Ordering, time::Duration};

use jiff::Timestamp;
use shared::metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::pass::{PassError, ShardPass, pass};
use crate::{Backoff, Signal, Worker, claim, pacing::Pacer};

fn local_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// What the loop knows of the shards (times in ms on the Redis clock).
struct Shards {
    /// Per shard: earliest due score and lease deadline as last seen.
    heads: Vec<(Option<i64>, Option<i64>)>,
    /// Per shard: the earliest time announced on the wake channel since its last pass.
    announced: Vec<Option<i64>>,
    /// Shards to pass over now (all at start).
    pending: Vec<bool>,
    /// Per shard whose last pass failed: when to try again, and the backoff behind it.
    retry: Vec<(Option<i64>, Backoff)>,
    /// Redis clock minus local clock, so sleeps follow Redis time.
    offset_ms: i64,
}

/// How an idle wait ended.
enum Woke {
    /// Stop requested (or every sender is gone).
    Stop,
    /// A wake-up message was taken in: look again.
    Signal,
    /// The safety poll re-read the heads: look again.
    Polled,
    /// The earliest known time came.
    Due,
}

impl Shards {
    fn new(n: usize) -> Self {
        Self {
            heads: vec![(None, None); n],
            announced: vec![None; n],
            pending: vec![true; n],
            retry: (0..n).map(|_| (None, shard_backoff())).collect(),
            offset_ms: 0,
        }
    }

    fn any_pending(&self) -> bool {
        self.pending.iter().any(|p| *p)
    }

    /// When shard `i` next needs a look: after a failure, its retry time.
    fn target(&self, i: usize) -> Option<i64> {
        if let Some(at) = self.retry[i].0 {
            return Some(at);
        }
        let (due, lease) = self.heads[i];
        [due, lease, self.announced[i]].into_iter().flatten().min()
    }

    /// Takes in a successful pass over shard `i` that started at local time `before`.
    fn passed(&mut self, i: usize, p: &ShardPass, before: i64, batch: usize) {
        self.heads[i] = (p.next_due_ms, p.next_lease_ms);
        self.announced[i] = None;
        // Measured against the time before the call: errs towards waking a little early (a
        // cheap empty claim), never late.
        self.offset_ms = p.now_ms - before;
        // A full batch: more may be due right now.
        self.pending[i] = p.claimed >= batch;
        self.retry[i].0 = None;
        self.retry[i].1.reset();
    }

    /// Takes in a failed pass over shard `i`: it waits for its own backoff (the other shards
    /// go on); returns that wait.
    fn failed(&mut self, i: usize) -> Duration {
        let d = self.retry[i].1.next_delay();
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.retry[i].0 = Some(local_ms() + self.offset_ms + ms);
        self.pending[i] = false;
        d
    }

    /// Takes in a wake-up message.
    fn signal(&mut self, s: Signal) {
        match s {
            Signal::At(t, shard) => {
                let n = self.heads.len();
                let slots = match shard {
                    Some(s) if usize::from(s) < n => usize::from(s)..usize::from(s) + 1,
                    _ => 0..n,
                };
                for i in slots {
                    self.announced[i] = Some(self.announced[i].map_or(t, |a| a.min(t)));
                }
            }
            Signal::Resync => self.pending.fill(true),
        }
    }

    /// How long to sleep, and whether the wake-up is the safety poll.
    fn sleep(&self, safety: Duration) -> (Duration, bool) {
        let earliest = (0..self.heads.len()).filter_map(|i| self.target(i)).min();
        let Some(t) = earliest else {
            return (safety, true);
        };
        let ms = u64::try_from((t - self.offset_ms - local_ms()).max(0)).unwrap_or(0);
        let d = Duration::from_millis(ms);
        if d >= safety {
            (safety, true)
        } else {
            (d, false)
        }
    }

    /// Between rounds of passes (a backlog or a failing shard keeps the loop passing): takes in
    /// the wake-ups that arrived meanwhile (a dropped one as a look at every shard) and adds
    /// every shard whose time has come.
    fn catch_up(&mut self, w: &Worker, rx: &mut mpsc::Receiver<Signal>) {
        while let Ok(s) = rx.try_recv() {
            self.signal(s);
        }
        if w.wake_overflow.swap(false, Ordering::Relaxed) {
            self.signal(Signal::Resync);
        }
        let now = local_ms() + self.offset_ms;
        for i in 0..self.pending.len() {
            if self.target(i).is_some_and(|t| t <= now + 1) {
                self.pending[i] = true;
            }
        }
    }

    /// After sleeping: marks every shard whose time has come.
    fn mark_due(&mut self) {
        let now = local_ms() + self.offset_ms;
        for i in 0..self.pending.len() {
            self.pending[i] = self.target(i).is_some_and(|t| t <= now + 1);
        }
        if !self.any_pending() {
            // Timer granularity: the earliest shard is due within a millisecond or two.
            let n = self.pending.len();
            if let Some(i) = (0..n).min_by_key(|i| self.target(*i).unwrap_or(i64::MAX)) {
                self.pending[i] = true;
            }
        }
    }
}

/// Runs the dispatch loop until `stop` fires.
pub async fn run(w: Worker, mut rx: mpsc::Receiver<Signal>, stop: CancellationToken) {
    let mut shards = Shards::new(usize::from(w.keys.claimed_shards()));
    let mut pacer = Pacer::new(w.cfg.worker.tenant_rate);
    while !stop.is_cancelled() {
        if shards.any_pending() {
            pass_pending(&w, &mut shards, &mut pacer, &stop).await;
            shards.catch_up(&w, &mut rx);
            continue;
        }
        match idle(&w, &mut shards, &mut rx, &stop).await {
            Woke::Stop => break,
            Woke::Signal | Woke::Polled => {}
            Woke::Due => shards.mark_due(),
        }
    }
    tracing::info!("dispatcher stopped claiming");
}

/// The backoff of one failing shard.
fn shard_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
}

/// Passes over every pending shard; a failed one is set to retry on its own backoff.
async fn pass_pending(
    w: &Worker,
    shards: &mut Shards,
    pacer: &mut Pacer,
    stop: &CancellationToken,
) {
    let mut all_ok = true;
    for shard in 0..w.keys.claimed_shards() {
        let i = usize::from(shard);
        if !shards.pending[i] || stop.is_cancelled() {
            continue;
        }
        let before = local_ms();
        match pass(w, shard, pacer).await {
            Ok(p) => shards.passed(i, &p, before, w.cfg.worker.batch),
            Err(e) => {
                all_ok = false;
                report(&e, shard, shards.failed(i));
            }
        }
    }
    if all_ok {
        metrics::set_health(metrics::REDIS_CONNECTION, true);
    }
}

/// Marks the failed dependency unhealthy and logs the failed pass.
fn report(e: &PassError, shard: u16, retry_in: Duration) {
    match e {
        PassError::ServiceRedis(_) => metrics::set_health(metrics::REDIS_CONNECTION, false),
        PassError::Voice(_) => metrics::set_health(metrics::ORS_REDIS_STATUS, false),
        PassError::Load(_) | PassError::NotRecorded(_) => {}
    }
    let retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX);
    tracing::warn!(error = %e, shard, retry_in_ms, "dispatch pass failed");
}

/// Sleeps until the earliest known due time, lease deadline or announcement, a wake-up
/// message, or the safety poll (which re-reads the heads in case a wake-up was missed).
async fn idle(
    w: &Worker,
    shards: &mut Shards,
    rx: &mut mpsc::Receiver<Signal>,
    stop: &CancellationToken,
) -> Woke {
    if w.wake_overflow.swap(false, Ordering::Relaxed) {
        shards.signal(Signal::Resync);
        return Woke::Signal;
    }
    let safety = Duration::from_secs(w.cfg.worker.safety_poll_s);
    let (sleep, is_safety_poll) = shards.sleep(safety);
    if sleep.is_zero() {
        return Woke::Due;
    }
    tokio::select! {
        () = stop.cancelled() => return Woke::Stop,
        () = tokio::time::sleep(sleep) => {}
        msg = rx.recv() => return match msg {
            Some(s) => {
                shards.signal(s);
                Woke::Signal
            }
            None => Woke::Stop,
        },
    }
    if !is_safety_poll {
        return Woke::Due;
    }
    // Nothing known to be due before the poll: re-read the heads (cheap).
    match w.redis.conn().await {
        Ok(mut c) => match claim::heads(&mut c, &w.keys).await {
            Ok(h) => shards.heads = h,
            Err(e) => {
                tracing::warn!(error = %e, "safety poll failed");
                shards.pending.fill(true);
            }
        },
        Err(_) => shards.pending.fill(true),
    }
    Woke::Polled
}

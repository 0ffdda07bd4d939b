//! The dispatch loop.
//!
//! Idle path: the loop knows each shard's earliest due score and lease deadline (every claim
//! returns them) and sleeps until the earliest of those, a wake-up from [`crate::wake`], or the
//! safety poll (`WORKER_SAFETY_POLL_S`, which reads only the shards' heads). Nothing is polled
//! per callback or per minute while callbacks wait. A shard due only for a lease deadline gets
//! a lease look (its schedule and in-flight heads) and is claimed only when a lease ran out or
//! an entry is due.
//!
//! Shards are independent (`busy`): every shard that falls due gets its claim at once,
//! whatever is still out for the others, and each claim is worked through as it comes back, so
//! a shard whose node is slow or frozen delays no other shard's claim; a shard whose pass fails
//! (its cluster node unreachable, a row that does not load) is retried on a backoff of its own
//! (`Shards::failed`); and a shard with a backlog is claimed again after each pass, beside the
//! others (docs/derived-state.md#a-failing-shard).
//!
//! Busy path, per shard ([`mod@pass`]): claim up to `WORKER_BATCH` due ids (lease
//! `WORKER_LEASE_MS`), load the rows, drop what is no longer pending (cancelled, already
//! submitted, purged), hand back what pacing holds, submit the rest in one deduplicating script
//! and mark them submitted in PostgreSQL. Every claim of the pass is then settled once
//! ([`settle`]): released, handed back to the schedule, or kept in flight until its lease runs
//! out. A failed submission (voice Redis down) counts `CB_SUBMIT_FAILED`, hands the batch back
//! as still due and backs off; the dedupe key makes the later retry safe even if the failed
//! call had in fact reached Redis.

mod busy;
pub mod pass;
pub mod settle;

use std::{collections::VecDeque, sync::atomic::Ordering, time::Duration};

use tokio::time::Instant;

use jiff::Timestamp;
use shared::metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::pass::{PassError, ShardPass};
use crate::{Backoff, Signal, Worker, claim, pacing::Pacer};

/// How many leases a read of a shard's in-flight head bounds its lease deadlines for
/// (docs/derived-state.md#claims-that-know-the-leases): a quiet shard (claims further apart
/// than a lease) still skips the read, and a bound made wrong by a lost announcement delays a
/// takeover by at most this many leases (the sweep corrects it sooner for overdue callbacks).
const READ_AGE_LEASES: i64 = 4;

/// Most own lease announcements remembered for dropping (each is heard within a round trip
/// of its claim; the bound only keeps a lost one from being remembered for ever).
const OWN_TAGS: usize = 256;

fn local_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// What the loop knows of the shards (times in ms on the Redis clock).
struct Shards {
    /// Per shard: earliest due score and lease deadline as last seen.
    heads: Vec<(Option<i64>, Option<i64>)>,
    /// Per shard: the earliest time announced on the wake channel since its last pass.
    announced: Vec<Option<i64>>,
    /// Per shard: the earliest lease deadline another worker's claim announced since its last
    /// pass.
    heard: Vec<Option<i64>>,
    /// Per pending shard: only a lease deadline made it due (one it saw or heard), so a lease
    /// look ([`claim::shard_heads`]) decides whether a claim is needed
    /// (docs/derived-state.md#wake-ups).
    looks: Vec<bool>,
    /// (shard, tag) of this worker's own lease announcements that need no wake-up: the pass
    /// left nothing in flight (`ShardPass::released_tag`). Dropped when heard; the oldest go
    /// first beyond [`OWN_TAGS`].
    own_released: VecDeque<(usize, u32)>,
    /// Per shard: when (Redis clock) its in-flight head was last read, since the last resync:
    /// its lease deadlines are then bounded by `heads` and `heard`, for at most
    /// `read_age_ms` (docs/derived-state.md#claims-that-know-the-leases).
    read_at: Vec<Option<i64>>,
    /// How long a read bounds the leases: [`READ_AGE_LEASES`] leases, so a wrong bound delays
    /// a takeover by at most that long.
    read_age_ms: i64,
    /// (shard, tag) of this worker's own lease announcements not heard back yet: until they
    /// are, the subscription may be behind, and the shard's claims read the in-flight head.
    own_unheard: VecDeque<(usize, u32)>,
    /// Shards to pass over now (all at start).
    pending: Vec<bool>,
    /// Per shard: its failures since the last successful pass.
    retry: Vec<Retry>,
    /// Redis clock minus local clock, so sleeps follow Redis time.
    offset_ms: i64,
    /// Leases this worker claimed without announcing them, while alone (shard, deadline,
    /// tag): announced when another worker becomes known (docs/derived-state.md#a-lone-worker).
    unannounced: VecDeque<(usize, i64, u32)>,
    /// Not before then (monotonic) after an announcement of them failed.
    flush_after: Option<Instant>,
    /// (shard, tag) of the lease announcements this worker published lately, to tell another
    /// worker's apart.
    own_sent: VecDeque<(usize, u32)>,
    /// A lease announcement that is not this worker's was heard: another worker exists.
    foreign: bool,
}

/// A shard's failed passes since its last successful one.
struct Retry {
    /// When to try again (monotonic, so no clock offset or jump moves it); `None`: healthy.
    at: Option<Instant>,
    backoff: Backoff,
    failures: u32,
    /// Whether the last failure was the service Redis's (for its health gauge).
    redis: bool,
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
            heard: vec![None; n],
            looks: vec![false; n],
            own_released: VecDeque::new(),
            read_at: vec![None; n],
            read_age_ms: READ_AGE_LEASES * 15_000,
            own_unheard: VecDeque::new(),
            pending: vec![true; n],
            retry: (0..n)
                .map(|_| Retry {
                    at: None,
                    backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
                    failures: 0,
                    redis: false,
                })
                .collect(),
            offset_ms: 0,
            unannounced: VecDeque::new(),
            flush_after: None,
            own_sent: VecDeque::new(),
            foreign: false,
        }
    }

    /// Notes a lease of shard `i` claimed without an announcement (`(deadline, tag)`); those
    /// whose deadline passed are forgotten. The worker hears it as from itself: should its pass
    /// fail and keep the claim, it looks at the deadline (a successful pass replaces `heard`).
    fn unannounced(&mut self, i: usize, (deadline, tag): (i64, u32)) {
        let now = local_ms() + self.offset_ms;
        self.unannounced.retain(|(_, d, _)| *d > now);
        if self.unannounced.len() >= OWN_TAGS {
            self.unannounced.pop_front();
        }
        self.unannounced.push_back((i, deadline, tag));
        if let Some(h) = self.heard.get_mut(i) {
            *h = Some(h.map_or(deadline, |h| h.min(deadline)));
        }
    }

    fn any_pending(&self) -> bool {
        self.pending.iter().any(|p| *p)
    }

    /// What a claim of shard `i` may take as known of its leases: a bound from the shard's
    /// last read (younger than `read_age_ms`) and every announcement heard since, when both
    /// are sure.
    fn known(&self, i: usize) -> claim::Known {
        let now = local_ms() + self.offset_ms;
        let fresh = self.read_at[i].is_some_and(|r| now - r < self.read_age_ms);
        if !fresh || self.own_unheard.iter().any(|(s, _)| *s == i) {
            return claim::Known::Nothing;
        }
        match [self.heads[i].1, self.heard[i]].into_iter().flatten().min() {
            None => claim::Known::Empty,
            Some(t) => claim::Known::From(t),
        }
    }

    /// Whether shard `i` has a due time that has come, known from its last pass or announced
    /// since: its claim then pops (`claim::Ask::due`; only the cost depends on it).
    fn expects_due(&self, i: usize) -> bool {
        let now = local_ms() + self.offset_ms;
        [self.heads[i].0, self.announced[i]]
            .into_iter()
            .flatten()
            .any(|t| t <= now)
    }

    /// Notes a lease announcement a claim of shard `i` published with `tag`.
    fn published(&mut self, i: usize, tag: u32) {
        if self.own_unheard.len() >= OWN_TAGS {
            // Hundreds unheard: the subscription is not delivering; trust nothing.
            self.own_unheard.clear();
            self.read_at.fill(None);
        }
        self.own_unheard.push_back((i, tag));
        if self.own_sent.len() >= OWN_TAGS {
            self.own_sent.pop_front();
        }
        self.own_sent.push_back((i, tag));
    }

    /// When shard `i` next needs a look (Redis clock): after a failure, its retry time.
    fn target(&self, i: usize) -> Option<i64> {
        if let Some(at) = self.retry[i].at {
            let wait = at.saturating_duration_since(Instant::now()).as_millis();
            let wait = i64::try_from(wait).unwrap_or(i64::MAX);
            return Some((local_ms() + self.offset_ms).saturating_add(wait));
        }
        let (due, lease) = self.heads[i];
        [due, lease, self.announced[i], self.heard[i]]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether at `at` shard `i` is due only because of a lease deadline (one its claims saw or
    /// another worker announced), with nothing due, announced or to retry.
    fn lease_only(&self, i: usize, at: i64) -> bool {
        let (due, lease) = self.heads[i];
        [lease, self.heard[i]]
            .into_iter()
            .flatten()
            .any(|t| t <= at)
            && self.retry[i].at.is_none()
            && [due, self.announced[i]]
                .into_iter()
                .all(|t| t.is_none_or(|t| t > at))
    }

    /// Takes in the lease look of shard `i`: its earliest due score and lease deadline
    /// (docs/derived-state.md#wake-ups). With neither come (by this worker's estimate of the
    /// Redis clock; an estimate behind only looks again at that time), the shard waits for
    /// them; with either come, it is claimed as soon as the look is taken in. A due entry a look finds may
    /// be one another worker handed back and then died.
    fn looked(&mut self, i: usize, (due, lease): (Option<i64>, Option<i64>)) {
        let now = local_ms() + self.offset_ms;
        self.looks[i] = false;
        if [due, lease].iter().flatten().all(|t| *t > now) {
            self.heads[i] = (due, lease);
            self.heard[i] = None;
            self.read_at[i] = Some(now);
            self.pending[i] = false;
        } else {
            self.pending[i] = true;
        }
    }

    /// Takes in a successful pass over shard `i` that started at local time `before`.
    fn passed(&mut self, i: usize, p: &ShardPass, before: i64, batch: usize) {
        self.heads[i] = (p.next_due_ms, p.next_lease_ms);
        self.announced[i] = None;
        self.heard[i] = None;
        if p.read_inflight {
            self.read_at[i] = Some(p.now_ms);
        }
        self.looks[i] = false;
        if let Some(tag) = p.released_tag {
            if self.own_released.len() >= OWN_TAGS {
                self.own_released.pop_front();
            }
            self.own_released.push_back((i, tag));
        }
        // Measured against the time before the call: errs towards waking a little early (a
        // cheap empty claim), never late.
        self.offset_ms = p.now_ms - before;
        // A full batch: more may be due right now.
        self.pending[i] = p.claimed >= batch;
        let r = &mut self.retry[i];
        r.at = None;
        r.backoff.reset();
        r.failures = 0;
    }

    /// Takes in a failed pass over shard `i`: it waits for its own backoff while the other
    /// shards go on. Returns that wait and the shard's failures in a row.
    fn failed(&mut self, i: usize, e: &PassError) -> (Duration, u32) {
        let r = &mut self.retry[i];
        r.redis = matches!(e, PassError::ServiceRedis(_));
        if r.redis {
            // The shard's node may have failed over and lost writes: read it again.
            self.read_at[i] = None;
        }
        let d = r.backoff.next_delay();
        r.at = Some(Instant::now() + d);
        r.failures = r.failures.saturating_add(1);
        self.pending[i] = false;
        self.looks[i] = false;
        (d, r.failures)
    }

    /// Whether any shard is waiting to retry a pass the service Redis failed.
    fn redis_failing(&self) -> bool {
        self.retry.iter().any(|r| r.at.is_some() && r.redis)
    }

    /// The shards to pass over now: every pending one, those due only for a heard lease as
    /// lease looks (`true`).
    fn to_send(&self) -> Vec<(u16, bool)> {
        (0..self.pending.len())
            .filter(|i| self.pending[*i])
            .filter_map(|i| u16::try_from(i).ok().map(|s| (s, self.looks[i])))
            .collect()
    }

    /// Every shard gets a claim, except those still backing off after a failure. Wake-ups may
    /// have been missed, so nothing is known of any shard's leases until it is read again.
    fn resync(&mut self) {
        for i in 0..self.pending.len() {
            self.resync_one(i);
        }
    }

    /// [`resync`](Self::resync) for shard `i` alone.
    fn resync_one(&mut self, i: usize) {
        self.read_at[i] = None;
        self.own_unheard.retain(|(s, _)| *s != i);
        if self.retry[i].at.is_none_or(|at| at <= Instant::now()) {
            self.pending[i] = true;
            self.looks[i] = false;
        }
    }

    /// Takes in a wake-up for shard `i` alone (an `At` for any shard or a `Resync` as if it
    /// named `i` only).
    fn signal_one(&mut self, i: usize, s: Signal) {
        match s {
            Signal::Resync => self.resync_one(i),
            Signal::At(t, _) => self.signal(Signal::At(t, u16::try_from(i).ok())),
            Signal::Lease(..) | Signal::Crowded => self.signal(s),
        }
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
            Signal::Lease(t, shard, tag) => {
                let own = (usize::from(shard), tag);
                let unheard = self.own_unheard.iter().position(|o| *o == own);
                if let Some(k) = unheard {
                    self.own_unheard.remove(k);
                }
                if let Some(k) = self.own_released.iter().position(|o| *o == own) {
                    self.own_released.remove(k);
                } else {
                    // Not this worker's (tag 0 is the sweep's): another worker exists.
                    self.foreign |= unheard.is_none() && tag != 0 && !self.own_sent.contains(&own);
                    if let Some(h) = self.heard.get_mut(own.0) {
                        *h = Some(h.map_or(t, |h| h.min(t)));
                    }
                }
            }
            // Taken in by `announce_unannounced` from the fleet's state.
            Signal::Crowded => {}
            Signal::Resync => self.resync(),
        }
    }

    /// How long to sleep, and whether the wake-up is the safety poll.
    fn sleep(&self, safety: Duration) -> (Duration, bool) {
        let earliest = (0..self.heads.len()).filter_map(|i| self.target(i)).min();
        let Some(t) = earliest else {
            return (safety, true);
        };
        let left = t.saturating_sub(self.offset_ms).saturating_sub(local_ms());
        let ms = u64::try_from(left.max(0)).unwrap_or(0);
        let d = Duration::from_millis(ms);
        if d >= safety {
            (safety, true)
        } else {
            (d, false)
        }
    }

    /// Takes in a wake-up dropped on a full channel as a look at every shard; returns whether
    /// there was one.
    fn take_overflow(&mut self, w: &Worker) -> bool {
        let dropped = w.wake_overflow.swap(false, Ordering::Relaxed);
        if dropped {
            self.resync();
        }
        dropped
    }

    /// After a busy phase: takes in the wake-ups that arrived as it ended (a dropped one as a
    /// look at every shard) and adds every shard whose time has come.
    fn catch_up(&mut self, w: &Worker, rx: &mut mpsc::Receiver<Signal>) {
        while let Ok(s) = rx.try_recv() {
            self.signal(s);
        }
        self.take_overflow(w);
        self.catch_up_times();
    }

    /// Adds every shard whose time has come (a look when only a heard lease is due).
    fn catch_up_times(&mut self) {
        self.catch_up_beside(&[]);
    }

    /// [`catch_up_times`](Self::catch_up_times) for the shards with nothing `out`.
    fn catch_up_beside(&mut self, out: &[bool]) {
        let now = local_ms() + self.offset_ms + 1;
        for i in 0..self.pending.len() {
            if out.get(i).copied().unwrap_or(false) {
                continue;
            }
            if self.target(i).is_some_and(|t| t <= now) {
                // A shard already pending for a claim stays a claim.
                let look = self.lease_only(i, now);
                self.looks[i] = look && (self.looks[i] || !self.pending[i]);
                self.pending[i] = true;
            }
        }
    }

    /// After sleeping: marks every shard whose time has come.
    fn mark_due(&mut self) {
        let now = local_ms() + self.offset_ms + 1;
        for i in 0..self.pending.len() {
            self.pending[i] = self.target(i).is_some_and(|t| t <= now);
            self.looks[i] = self.pending[i] && self.lease_only(i, now);
        }
        if !self.any_pending() {
            // Timer granularity: the earliest shard is due within a millisecond or two.
            let n = self.pending.len();
            if let Some(i) = (0..n).min_by_key(|i| self.target(*i).unwrap_or(i64::MAX)) {
                self.pending[i] = true;
                self.looks[i] = self.target(i).is_some_and(|t| self.lease_only(i, t));
            }
        }
    }
}

/// Runs the dispatch loop until `stop` fires.
pub async fn run(w: Worker, mut rx: mpsc::Receiver<Signal>, stop: CancellationToken) {
    let mut shards = Shards::new(usize::from(w.keys.claimed_shards()));
    shards.read_age_ms =
        READ_AGE_LEASES.saturating_mul(i64::try_from(w.cfg.worker.lease_ms).unwrap_or(i64::MAX));
    let mut pacer = Pacer::new(w.cfg.worker.tenant_rate);
    while !stop.is_cancelled() {
        announce_unannounced(&w, &mut shards).await;
        if shards.any_pending() {
            busy::run(&w, &mut shards, &mut pacer, &mut rx, &stop).await;
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

/// Announces the leases this worker claimed while alone, once another worker is known (a
/// lease heard that is not this worker's, or a hello: docs/derived-state.md#a-lone-worker), so
/// that the other can take them over should this one die: per shard one message with the
/// earliest deadline still to come (the other worker's look then reads the in-flight head),
/// every shard at once within one `REDIS_TIMEOUT_MS`. Those that fail are tried again a second
/// later; one never announced is taken over after the sweep finds it.
async fn announce_unannounced(w: &Worker, shards: &mut Shards) {
    if std::mem::take(&mut shards.foreign) && w.fleet.crowd() {
        tracing::info!("another worker's lease heard: claims announce their leases");
    }
    if shards.unannounced.is_empty()
        || !w.fleet.crowded()
        || shards.flush_after.is_some_and(|t| Instant::now() < t)
    {
        return;
    }
    let now = local_ms() + shards.offset_ms;
    let mut earliest: std::collections::BTreeMap<usize, (i64, u32)> = Default::default();
    for (i, deadline, tag) in std::mem::take(&mut shards.unannounced) {
        if deadline > now {
            let e = earliest.entry(i).or_insert((deadline, tag));
            if deadline < e.0 {
                *e = (deadline, tag);
            }
        }
    }
    // What is not announced goes back into the queue, to be tried again a second later.
    let again = |shards: &mut Shards, leases: &[(usize, (i64, u32))]| {
        for (i, (deadline, tag)) in leases {
            shards.unannounced.push_back((*i, *deadline, *tag));
        }
        shards.flush_after = Some(Instant::now() + Duration::from_secs(1));
    };
    let earliest: Vec<(usize, (i64, u32))> = earliest.into_iter().collect();
    let Ok(conn) = w.redis.conn().await else {
        again(shards, &earliest);
        return;
    };
    let sends = earliest.iter().copied().map(|(i, lease)| {
        let mut conn = conn.clone();
        async move {
            let shard = u16::try_from(i).unwrap_or_default();
            (
                i,
                lease,
                claim::announce(&mut conn, &w.keys, shard, lease).await,
            )
        }
    });
    let patience = Duration::from_millis(w.cfg.redis.timeout_ms.max(100));
    let Ok(sent) = tokio::time::timeout(patience, futures::future::join_all(sends)).await else {
        again(shards, &earliest);
        return;
    };
    let mut failed = Vec::new();
    for (i, lease, result) in sent {
        match result {
            Ok(()) => shards.published(i, lease.1),
            Err(e) => {
                tracing::debug!(error = %e, shard = i, "announcing a lease failed");
                failed.push((i, lease));
            }
        }
    }
    if !failed.is_empty() {
        again(shards, &failed);
    }
}

/// Stopping: gives back the claims not worked through, all at once, within 2 s.
async fn give_back_all(w: &Worker, claims: Vec<pass::Claim>) {
    if claims.is_empty() {
        return;
    }
    let all = futures::future::join_all(claims.into_iter().map(|c| pass::give_back(w, c)));
    if tokio::time::timeout(Duration::from_secs(2), all)
        .await
        .is_err()
    {
        tracing::warn!("giving back claims at stop timed out; their leases will run out");
    }
}

/// Takes in a failed pass over `shard` and reports it.
fn fail(shards: &mut Shards, shard: u16, e: &PassError) {
    let (retry_in, failures) = shards.failed(usize::from(shard), e);
    report(e, shard, retry_in, failures);
}

/// Marks the failed dependency unhealthy and logs the failed pass: a shard's 1st, 2nd, 4th,
/// 8th… failure in a row, so a long outage does not flood the log.
fn report(e: &PassError, shard: u16, retry_in: Duration, failures: u32) {
    match e {
        PassError::ServiceRedis(_) => metrics::set_health(metrics::REDIS_CONNECTION, false),
        PassError::Voice(_) => metrics::set_health(metrics::ORS_REDIS_STATUS, false),
        PassError::Load(_) | PassError::NotRecorded(_) => {}
    }
    if failures.is_power_of_two() {
        let retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(error = %e, shard, failures, retry_in_ms, "dispatch pass failed");
    }
}

/// Sleeps until the earliest known due time, lease deadline or announcement, a wake-up
/// message, or the safety poll (which re-reads the heads in case a wake-up was missed).
async fn idle(
    w: &Worker,
    shards: &mut Shards,
    rx: &mut mpsc::Receiver<Signal>,
    stop: &CancellationToken,
) -> Woke {
    if shards.take_overflow(w) {
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
                shards.resync();
            }
        },
        Err(_) => shards.resync(),
    }
    Woke::Polled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> PassError {
        PassError::ServiceRedis(redis::RedisError::from((redis::ErrorKind::Io, "refused")))
    }

    #[test]
    fn a_resync_does_not_cut_a_failing_shards_backoff_short() {
        let mut s = Shards::new(3);
        s.pending.fill(false);
        s.failed(1, &refused());
        s.signal(Signal::Resync);
        assert_eq!(s.pending, [true, false, true]);
        assert!(s.redis_failing());
    }

    #[test]
    fn a_retry_keeps_its_wait_whatever_the_clock_offset() {
        let mut s = Shards::new(1);
        let (wait, failures) = s.failed(0, &refused());
        assert_eq!((wait, failures), (Duration::from_millis(100), 1));
        // The Redis clock turns out to be 300 s behind the host's.
        s.offset_ms = -300_000;
        let (sleep, safety_poll) = s.sleep(Duration::from_secs(120));
        assert!(
            !safety_poll && sleep <= Duration::from_millis(100),
            "{sleep:?}"
        );
    }

    #[test]
    fn only_its_own_released_lease_announcement_is_dropped() {
        let mut s = Shards::new(2);
        let pass = ShardPass {
            claimed: 1,
            released_tag: Some(7),
            ..ShardPass::default()
        };
        s.passed(0, &pass, 0, 10);
        // Another claim's tag in the same shard, and the same tag in another shard: woken.
        s.signal(Signal::Lease(5_000, 0, 8));
        s.signal(Signal::Lease(6_000, 1, 7));
        assert_eq!(s.heard, [Some(5_000), Some(6_000)]);
        // Its own: dropped, once.
        s.heard = vec![None, None];
        s.signal(Signal::Lease(5_000, 0, 7));
        assert_eq!(s.heard, [None, None]);
        s.signal(Signal::Lease(5_000, 0, 7));
        assert_eq!(s.heard, [Some(5_000), None]);
        // A pass that kept claims in flight remembers no tag: its lease is woken for.
        let kept = ShardPass {
            claimed: 1,
            next_lease_ms: Some(9_000),
            ..ShardPass::default()
        };
        s.passed(1, &kept, 0, 10);
        assert!(s.own_released.is_empty());
        assert_eq!(s.heads[1], (None, Some(9_000)));
    }

    #[test]
    fn a_lease_deadline_alone_is_a_look_and_anything_else_a_claim() {
        let mut s = Shards::new(3);
        s.pending = vec![false; 3];
        let now = local_ms();
        // Shard 0: only another worker's lease ran out. Shard 1: the same, and something is
        // announced due. Shard 2: a lease its claim saw.
        s.signal(Signal::Lease(now - 10, 0, 1));
        s.signal(Signal::Lease(now - 10, 1, 2));
        s.signal(Signal::At(now - 5, Some(1)));
        s.heads[2] = (None, Some(now - 10));
        s.mark_due();
        assert_eq!(s.to_send(), [(0, true), (1, false), (2, true)]);
        // A look that found a live lease: woken for at its deadline, with a look again.
        s.looked(0, (None, Some(now + 60_000)));
        assert_eq!((s.pending[0], s.heard[0]), (false, None));
        assert_eq!(s.target(0), Some(now + 60_000));
        assert!(s.lease_only(0, now + 60_000));
        // A look that found a due entry (or an expired lease): a claim next.
        for seen in [(Some(now - 1), Some(now + 60_000)), (None, Some(now - 1))] {
            s.pending[0] = false;
            s.looked(0, seen);
            assert!(s.pending[0] && !s.looks[0]);
        }
        // A look that found a due time to come: woken for it with a claim.
        s.pending[0] = false;
        s.looked(0, (Some(now + 500), None));
        assert_eq!((s.pending[0], s.target(0)), (false, Some(now + 500)));
        assert!(!s.lease_only(0, now + 500));
        // An announcement arriving for a shard pending as a look makes it a claim.
        s.signal(Signal::Lease(now - 10, 0, 3));
        s.catch_up_times();
        assert_eq!(s.to_send()[0], (0, true));
        s.signal(Signal::At(now - 1, Some(0)));
        s.catch_up_times();
        assert_eq!(s.to_send()[0], (0, false));
        // A resync is always a claim.
        s.passed(0, &ShardPass::default(), 0, 10);
        s.signal(Signal::Lease(now - 10, 0, 4));
        s.catch_up_times();
        assert_eq!(s.to_send()[0], (0, true));
        s.resync();
        assert_eq!(s.to_send()[0], (0, false));
    }

    #[test]
    fn a_claim_skips_the_inflight_read_only_on_a_sure_bound() {
        use claim::Known;
        let mut s = Shards::new(2);
        let now = local_ms();
        let read = |p: ShardPass| ShardPass {
            now_ms: now,
            read_inflight: true,
            ..p
        };
        // Nothing read yet.
        assert_eq!(s.known(0), Known::Nothing);
        // A pass whose claims all went, with nothing in flight before: none in flight.
        let gone = read(ShardPass {
            claimed: 1,
            released_tag: Some(7),
            ..ShardPass::default()
        });
        s.published(0, 7);
        s.passed(0, &gone, now, 10);
        // Its own announcement not heard back yet: the subscription may be behind.
        assert_eq!(s.known(0), Known::Nothing);
        s.signal(Signal::Lease(now + 9_000, 0, 7));
        assert_eq!(s.known(0), Known::Empty);
        // Another worker's lease: every deadline is at or after it.
        s.signal(Signal::Lease(now + 8_000, 0, 9));
        assert_eq!(s.known(0), Known::From(now + 8_000));
        // The sweep's word of a lease that ran out (tag 0): the next claim reads.
        s.signal(Signal::Lease(now - 1, 0, 0));
        assert_eq!(s.known(0), Known::From(now - 1));
        // A pass that kept a lease: the earlier of its head and what was heard since.
        let kept = read(ShardPass {
            claimed: 1,
            next_lease_ms: Some(now + 12_000),
            ..ShardPass::default()
        });
        s.passed(1, &kept, now, 10);
        s.signal(Signal::Lease(now + 11_000, 1, 3));
        assert_eq!(s.known(1), Known::From(now + 11_000));
        // A look reads the head too.
        s.looked(1, (None, Some(now + 60_000)));
        assert_eq!(s.known(1), Known::From(now + 60_000));
        // A pass that did not read keeps the age of the last read: a bound is trusted for
        // READ_AGE_LEASES leases after the read it comes from, whatever was heard since.
        s.read_at[1] = Some(now - s.read_age_ms);
        let unread = ShardPass {
            read_inflight: false,
            ..kept
        };
        s.passed(1, &unread, now, 10);
        assert_eq!(s.known(1), Known::Nothing);
        // A failure on the service Redis (the node may have failed over): read again.
        s.passed(1, &kept, now, 10);
        s.failed(1, &refused());
        assert_eq!(s.known(1), Known::Nothing);
        // A resync (a subscription that may have missed announcements) forgets every bound,
        // and the announcements it waited for.
        s.published(1, 4);
        s.resync();
        assert_eq!((s.known(0), s.known(1)), (Known::Nothing, Known::Nothing));
        assert!(s.own_unheard.is_empty());
        // Too many own announcements unheard: nothing is trusted.
        s.passed(0, &read(ShardPass::default()), now, 10);
        assert_eq!(s.known(0), Known::Empty);
        for tag in 1..=OWN_TAGS as u32 + 1 {
            s.published(1, tag);
        }
        assert_eq!(s.known(0), Known::Nothing);
    }
}

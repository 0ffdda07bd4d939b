//! The busy phase of the dispatch loop: claims and lease looks go out per shard as each shard
//! falls due, not in rounds (docs/derived-state.md#a-failing-shard).
//!
//! Every due shard that has nothing out gets its claim (or lease look) at once; each comes back
//! on its own time and is worked through then, one at a time (pacing and PostgreSQL see one
//! pass at a time). Meanwhile the phase keeps taking in wake-ups and the clock, so a shard that
//! falls due while another shard's claim waits on a frozen node is claimed at its time, not
//! when that claim times out. The phase ends when nothing is out.
//!
//! A wake-up for a shard whose claim or look is out is held until it comes back and then taken
//! in, as the dispatcher always took wake-ups in after a pass: the pass's own read must not
//! replace what was announced after it (docs/derived-state.md#claims-that-know-the-leases), and
//! its own lease announcement is dropped only once the pass knows its tag.

use std::{future::Future, pin::Pin, sync::atomic::Ordering, time::Duration};

use futures::stream::{FuturesUnordered, StreamExt};
use shared::{metrics, redis::RedisConn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    Shards, fail, give_back_all, local_ms,
    pass::{self, PassError},
};
use crate::{Signal, Worker, claim, pacing::Pacer};

/// A claim or lease look that came back.
enum Done {
    /// Shard, local time the claim was sent, and the claim.
    Claim(u16, i64, Result<pass::Claim, PassError>),
    /// Shard and the heads the look read.
    Look(u16, redis::RedisResult<(Option<i64>, Option<i64>)>),
}

type Out<'a> = Pin<Box<dyn Future<Output = Done> + Send + 'a>>;

/// What the phase keeps besides the shards.
struct Phase {
    /// Per shard: its claim or look is out.
    out: Vec<bool>,
    /// Wake-ups held for a shard whose claim or look is out (shard, wake-up for that shard).
    held: Vec<(usize, Signal)>,
    /// Claims come back after the stop: given back at the end.
    stopped: Vec<pass::Claim>,
}

/// Runs the busy phase until nothing is out (see the module doc).
pub(super) async fn run(
    w: &Worker,
    shards: &mut Shards,
    pacer: &mut Pacer,
    rx: &mut mpsc::Receiver<Signal>,
    stop: &CancellationToken,
) {
    let conn = match w.redis.conn().await {
        Ok(conn) => conn,
        Err(e) => {
            let e = PassError::ServiceRedis(e);
            for (shard, _) in shards.to_send() {
                fail(shards, shard, &e);
            }
            return;
        }
    };
    let mut phase = Phase {
        out: vec![false; shards.pending.len()],
        held: Vec::new(),
        stopped: Vec::new(),
    };
    let mut ops = FuturesUnordered::new();
    loop {
        if !stop.is_cancelled() {
            send(w, shards, &conn, &mut phase.out, &mut ops);
        }
        if ops.is_empty() {
            break;
        }
        // Stopping: only what is out is waited for (a due shard would wake the loop at once).
        let wait = if stop.is_cancelled() {
            Duration::from_secs(3_600)
        } else {
            shards.wait_beside(&phase.out)
        };
        tokio::select! {
            Some(done) = ops.next() => take_in(w, shards, (pacer, stop), &mut phase, done).await,
            Some(s) = rx.recv() => phase.signal(shards, s),
            () = tokio::time::sleep(wait) => {}
        }
        if w.wake_overflow.swap(false, Ordering::Relaxed) {
            phase.signal(shards, Signal::Resync);
        }
        super::announce_unannounced(w, shards).await;
        shards.catch_up_beside(&phase.out);
    }
    give_back_all(w, phase.stopped).await;
    // Healthy only when no shard still fails on it.
    if !shards.redis_failing() {
        metrics::set_health(metrics::REDIS_CONNECTION, true);
    }
}

/// Sends the claim or look of every pending shard that has nothing out.
fn send<'a>(
    w: &'a Worker,
    shards: &Shards,
    conn: &RedisConn,
    out: &mut [bool],
    ops: &mut FuturesUnordered<Out<'a>>,
) {
    let to_send: Vec<_> = shards
        .to_send()
        .into_iter()
        .filter(|(shard, _)| !out[usize::from(*shard)])
        .collect();
    // A lone worker's claims do not announce their leases (docs/derived-state.md#a-lone-worker).
    let announce = !w.fleet.alone();
    for (shard, look) in to_send {
        let i = usize::from(shard);
        out[i] = true;
        let mut conn = conn.clone();
        if look {
            ops.push(Box::pin(async move {
                Done::Look(shard, claim::shard_heads(&mut conn, &w.keys, shard).await)
            }));
        } else {
            let ask = (shards.known(i), shards.expects_due(i), announce);
            ops.push(Box::pin(async move {
                let sent = local_ms();
                Done::Claim(shard, sent, pass::claim(w, conn, shard, ask).await)
            }));
        }
    }
}

/// Takes in a claim or look that came back, then the wake-ups held for its shard.
async fn take_in(
    w: &Worker,
    shards: &mut Shards,
    (pacer, stop): (&mut Pacer, &CancellationToken),
    phase: &mut Phase,
    done: Done,
) {
    let shard = match done {
        Done::Look(shard, heads) => {
            match heads {
                Ok(heads) => shards.looked(usize::from(shard), heads),
                // As a failed claim: the shard retries on its own backoff, with a claim.
                Err(e) => fail(shards, shard, &PassError::ServiceRedis(e)),
            }
            shard
        }
        Done::Claim(shard, sent, claimed) => {
            work_through(
                w,
                shards,
                (pacer, stop),
                &mut phase.stopped,
                (shard, sent, claimed),
            )
            .await;
            shard
        }
    };
    phase.back(shards, usize::from(shard));
}

/// Works a claim that came back through: a claim that waited more than half its lease for its
/// turn is given back rather than worked through late (another worker may take it meanwhile);
/// one that came back after the stop is kept for [`give_back_all`].
async fn work_through(
    w: &Worker,
    shards: &mut Shards,
    (pacer, stop): (&mut Pacer, &CancellationToken),
    stopped: &mut Vec<pass::Claim>,
    (shard, sent, claimed): (u16, i64, Result<pass::Claim, PassError>),
) {
    let i = usize::from(shard);
    if let Ok(c) = &claimed {
        if let Some(tag) = c.announced() {
            shards.published(i, tag);
        }
        if let Some(lease) = c.unannounced() {
            shards.unannounced(i, lease);
            // Another worker became known while the claim was out.
            super::announce_unannounced(w, shards).await;
        }
    }
    let half_lease = i64::try_from(w.cfg.worker.lease_ms / 2).unwrap_or(i64::MAX);
    let result = match claimed {
        Ok(c) if stop.is_cancelled() => {
            stopped.push(c);
            return;
        }
        Ok(c) if c.age_ms() > half_lease => {
            pass::give_back(w, c).await;
            shards.pending[i] = true;
            return;
        }
        Ok(c) => pass::finish(w, c, pacer).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(p) => shards.passed(i, &p, sent, w.cfg.worker.batch),
        Err(e) => fail(shards, shard, &e),
    }
}

impl Phase {
    /// Takes in a wake-up: at once for the shards with nothing out, held for the others.
    fn signal(&mut self, shards: &mut Shards, s: Signal) {
        let n = self.out.len();
        match s {
            Signal::At(t, shard) => {
                let only = shard.map(usize::from).filter(|i| *i < n);
                for i in (0..n).filter(|i| only.is_none_or(|o| o == *i)) {
                    let one = Signal::At(t, u16::try_from(i).ok());
                    self.one(shards, i, one);
                }
            }
            Signal::Lease(_, shard, _) => self.one(shards, usize::from(shard), s),
            Signal::Crowded => shards.signal(s),
            Signal::Resync => {
                for i in 0..n {
                    self.one(shards, i, s);
                }
            }
        }
    }

    /// Shard `i`'s claim or look came back and was taken in: the wake-ups held for it now.
    fn back(&mut self, shards: &mut Shards, i: usize) {
        self.out[i] = false;
        let (mine, rest) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(s, _)| *s == i);
        self.held = rest;
        for (_, s) in mine {
            shards.signal_one(i, s);
        }
    }

    fn one(&mut self, shards: &mut Shards, i: usize, s: Signal) {
        if self.out.get(i).copied().unwrap_or(false) {
            self.held.push((i, s));
        } else {
            shards.signal_one(i, s);
        }
    }
}

impl Shards {
    /// How long the phase may wait for a claim or look to come back before a shard with
    /// nothing out falls due (an hour when none has a time).
    fn wait_beside(&self, out: &[bool]) -> Duration {
        let earliest = (0..self.heads.len())
            .filter(|i| !out[*i])
            .filter_map(|i| self.target(i))
            .min();
        let Some(t) = earliest else {
            return Duration::from_secs(3_600);
        };
        let left = t.saturating_sub(self.offset_ms).saturating_sub(local_ms());
        Duration::from_millis(u64::try_from(left.max(0)).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::pass::ShardPass;

    fn phase(out: Vec<bool>) -> Phase {
        Phase {
            out,
            held: Vec::new(),
            stopped: Vec::new(),
        }
    }

    #[test]
    fn wake_ups_for_a_shard_with_a_claim_out_wait_until_it_is_taken_in() {
        let mut s = Shards::new(3);
        s.pending.fill(false);
        let mut p = phase(vec![false, true, false]);
        p.signal(&mut s, Signal::At(5_000, None));
        p.signal(&mut s, Signal::At(4_000, Some(1)));
        p.signal(&mut s, Signal::Lease(9_000, 1, 7));
        p.signal(&mut s, Signal::Lease(8_000, 2, 7));
        assert_eq!(s.announced, [Some(5_000), None, Some(5_000)]);
        assert_eq!(s.heard, [None, None, Some(8_000)]);
        // The pass of shard 1 came back (it left nothing in flight, its tag was 7): what it
        // read replaces the heads, then the held wake-ups are taken in; its own lease
        // announcement is dropped.
        let pass = ShardPass {
            claimed: 1,
            released_tag: Some(7),
            ..ShardPass::default()
        };
        s.passed(1, &pass, 0, 10);
        p.back(&mut s, 1);
        assert_eq!(s.announced[1], Some(4_000));
        assert_eq!(s.heard[1], None);
        assert!(p.held.is_empty() && !p.out[1]);
    }

    #[test]
    fn a_resync_during_a_claim_reaches_its_shard_after_the_claim() {
        let mut s = Shards::new(2);
        s.pending.fill(false);
        s.read_at.fill(Some(1));
        let mut p = phase(vec![true, false]);
        p.signal(&mut s, Signal::Resync);
        assert_eq!(s.pending, [false, true]);
        assert_eq!(s.read_at, [Some(1), None]);
        let pass = ShardPass {
            now_ms: 2,
            read_inflight: true,
            ..ShardPass::default()
        };
        s.passed(0, &pass, 0, 10);
        p.back(&mut s, 0);
        assert_eq!((s.pending[0], s.read_at[0]), (true, None));
    }

    #[test]
    fn the_wait_beside_counts_only_the_shards_with_nothing_out() {
        let mut s = Shards::new(2);
        let now = local_ms();
        s.heads = vec![(Some(now - 1), None), (Some(now + 60_000), None)];
        assert_eq!(s.wait_beside(&[false, false]), Duration::ZERO);
        let w = s.wait_beside(&[true, false]);
        assert!(
            w > Duration::from_secs(59) && w <= Duration::from_secs(60),
            "{w:?}"
        );
        assert_eq!(s.wait_beside(&[true, true]), Duration::from_secs(3_600));
        s.pending.fill(false);
        s.catch_up_beside(&[true, false]);
        assert_eq!(s.pending, [false, false]);
        s.catch_up_beside(&[false, false]);
        assert_eq!(s.pending, [true, false]);
    }
}

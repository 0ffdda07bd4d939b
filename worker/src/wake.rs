//! Wake-ups: a subscriber on its own connection (never the shared multiplexed one) to the
//! service Redis wake channels, one per claimed shard and the former single channel
//! ([`shared::redis::Keys::wake_channels`]). Writers publish the dispatch time of a callback
//! that became its shard's head; claims publish their lease deadline. Each message becomes a
//! [`Signal::At`] or [`Signal::Lease`] for the dispatcher. Workers also greet each other here
//! (`hello.<id>.<ask>` on the former channel, [`crate::fleet`]): a lone worker's claims do not
//! announce their leases.
//!
//! Messages sent before a subscription takes effect are missed: at start-up (the dispatcher's
//! first pass may run before it) and while it is broken (Redis restarted, network). So every
//! subscription tells the dispatcher to look at every shard ([`Signal::Resync`]), and a
//! re-subscription also asks the reconciler to check whether Redis lost its data.

use std::time::Duration;

use futures::StreamExt;
use redis::{IntoConnectionInfo, aio::PubSub};
use secrecy::ExposeSecret;
use tokio::{sync::mpsc, time::timeout};
use tokio_util::sync::CancellationToken;

use crate::{Backoff, Signal, Worker, fleet};

/// Runs the subscriber until `stop` fires. One subscription at a time, on one node of
/// `REDIS_URL` (a cluster delivers every message to the subscribers of every node): the first,
/// until it fails or stops answering, then the next one, in turn
/// (docs/derived-state.md#wake-ups).
pub async fn run(w: Worker, tx: mpsc::Sender<Signal>, stop: CancellationToken) {
    let nodes = nodes(&w.cfg.redis.url);
    if w.cfg.redis.cluster && nodes.len() < 2 {
        tracing::warn!(
            "REDIS_URL names one cluster node: the wake-up subscription has no other node to \
             move to while it does not answer (docs/derived-state.md#wake-ups)"
        );
    }
    let patience = Patience::new(w.cfg.redis.timeout_ms, nodes.len());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut first = true;
    for node in (0..nodes.len()).cycle() {
        let ended = tokio::select! {
            () = stop.cancelled() => return,
            ended = listen(&w, &tx, (nodes[node], patience), &mut first, &mut backoff) => ended,
        };
        let next = if nodes.len() > 1 {
            "moving to the next node"
        } else {
            "subscribing again"
        };
        tracing::warn!(node, ended = %ended, "wake subscription ended; {next}");
        // A silent node was already waited for: the next try goes at once (a subscription
        // request sent to a frozen server is answered the moment it thaws). Errors back off.
        if !matches!(ended, Ended::Silent(_))
            && crate::sleep_or_stop(backoff.next_delay(), &stop).await
        {
            return;
        }
    }
}

/// How long a node may stay silent.
#[derive(Debug, Clone, Copy)]
struct Patience {
    /// For the answer to a `PING`.
    ping: Duration,
    /// For connecting and subscribing.
    subscribe: Duration,
}

impl Patience {
    /// With other nodes to move to, a node is left after `REDIS_TIMEOUT_MS` (4 × for a new
    /// subscription); a lone server is only reconnected to, after 5 s or 10 × that timeout,
    /// so that a busy or frozen one is waited for on its open subscription rather than
    /// re-subscribed to over and over.
    fn new(timeout_ms: u64, nodes: usize) -> Self {
        let t = Duration::from_millis(timeout_ms).max(Duration::from_millis(100));
        if nodes > 1 {
            Self {
                ping: t,
                subscribe: t * 4,
            }
        } else {
            let lone = (t * 10).max(Duration::from_secs(5));
            Self {
                ping: lone,
                subscribe: lone,
            }
        }
    }
}

/// Why a subscription ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("{0}")]
    Failed(#[from] redis::RedisError),
    #[error("no answer within REDIS_TIMEOUT_MS while {0}")]
    Silent(&'static str),
    #[error("connection closed")]
    Closed,
}

/// One subscription on `url`: forwards its messages to the dispatcher until the connection
/// fails, closes, or stays silent and then does not answer a `PING` (a frozen node keeps its
/// connections open and says nothing).
async fn listen(
    w: &Worker,
    tx: &mpsc::Sender<Signal>,
    (url, patience): (&str, Patience),
    first: &mut bool,
    backoff: &mut Backoff,
) -> Ended {
    let pubsub = match timeout(patience.subscribe, subscribe(w, url)).await {
        Err(_) => return Ended::Silent("subscribing"),
        Ok(Err(e)) => return e.into(),
        Ok(Ok(pubsub)) => pubsub,
    };
    backoff.reset();
    // Messages published before this subscription took effect were not received: on a
    // reconnect those of the outage, at start-up those sent while the dispatcher's first pass
    // was already done. Either way every shard is looked at again (one cheap claim each), so
    // nothing waits for the safety poll.
    w.wake(tx, Signal::Resync);
    // Messages were missed too, perhaps another worker's hello: not alone until this one's
    // hello comes back and nobody answered (crate::fleet).
    w.fleet.subscribed();
    tokio::spawn(greet(w.clone(), true));
    if !*first {
        // Redis may also have lost its data.
        w.reconcile_check.notify_one();
    }
    *first = false;
    let (mut sink, mut messages) = pubsub.split();
    let mut quiet = Quiet::new(w.cfg.worker.wake_ping_s, w.cfg.worker.wake_ping_idle_s);
    loop {
        match timeout(quiet.wait(), messages.next()).await {
            Ok(Some(msg)) => {
                quiet.heard();
                let payload = msg.get_payload::<String>().ok();
                if let Some((id, ask)) = payload.as_deref().and_then(fleet::parse) {
                    hello(w, tx, id, ask).await;
                    continue;
                }
                let signal = payload.and_then(|s| parse(&s)).unwrap_or(Signal::Resync);
                w.wake(tx, signal);
            }
            Ok(None) => return Ended::Closed,
            // Silent for a while: is the node still there? (Only when idle; any message
            // proves it is.)
            Err(_) => match timeout(patience.ping, sink.ping::<redis::Value>()).await {
                Ok(Ok(_)) => quiet.pinged(),
                Ok(Err(e)) => return e.into(),
                Err(_) => return Ended::Silent("answering a PING"),
            },
        }
    }
}

/// Takes in a worker's hello: another's makes this one crowded (the dispatcher then announces
/// the leases it holds unannounced) and gets an answer when it asks for one.
async fn hello(w: &Worker, tx: &mpsc::Sender<Signal>, id: u64, ask: bool) {
    match w.fleet.hello(id, ask) {
        fleet::Heard::Own => {}
        fleet::Heard::Other { first, reply } => {
            if first {
                tracing::info!("another worker is running: claims announce their leases");
                w.wake(tx, Signal::Crowded);
            }
            if !reply {
                return;
            }
            if w.fleet.ask() {
                tokio::spawn(answer(w.clone()));
            }
            if let Some(after) = w.fleet.relook() {
                tokio::spawn(relook(w.clone(), tx.clone(), after));
            }
        }
    }
}

/// Answers the hellos heard (coalesced, crate::fleet).
async fn answer(w: Worker) {
    loop {
        greet(w.clone(), false).await;
        if !w.fleet.answered() {
            return;
        }
    }
}

/// Has every shard's in-flight head read again `after` this long (spaced, crate::fleet): a
/// newcomer heard late (this worker was frozen, or its subscription behind) may have counted
/// itself alone and claimed unannounced meanwhile, and should it die, its leases are known
/// only from there (docs/derived-state.md#a-lone-worker).
async fn relook(w: Worker, tx: mpsc::Sender<Signal>, after: Duration) {
    tokio::time::sleep(after).await;
    w.fleet.relooked();
    w.wake(&tx, Signal::Resync);
}

/// Publishes this worker's hello on the former wake channel, which every worker hears (best
/// effort: unheard, this worker is not alone, and claims keep announcing). Spawned, so a slow
/// node delays no wake-up.
async fn greet(w: Worker, ask: bool) {
    let hello = async {
        let mut conn = w.redis.conn().await?;
        redis::cmd("PUBLISH")
            .arg(w.keys.former_wake_channel())
            .arg(w.fleet.greeting(ask))
            .query_async::<i64>(&mut conn)
            .await
    };
    let patience = Duration::from_millis(w.cfg.redis.timeout_ms.max(100));
    match timeout(patience, hello).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "publishing the worker's hello failed"),
        Err(_) => tracing::debug!("publishing the worker's hello timed out"),
    }
}

/// How long the subscription may stay silent before the next liveness `PING`:
/// `WORKER_WAKE_PING_S` (2 s) after a message, doubling after each answered `PING` with no
/// message between (4, 8, 16 s), up to `WORKER_WAKE_PING_IDLE_S` (30 s). A frozen node is
/// noticed within the wait in force when it froze, plus `REDIS_TIMEOUT_MS`; an idle worker
/// sends one `PING` per 30 s instead of one per 2 s (docs/derived-state.md#wake-ups).
#[derive(Debug, Clone, Copy)]
struct Quiet {
    base: Duration,
    cap: Duration,
    now: Duration,
}

impl Quiet {
    fn new(base_s: u64, cap_s: u64) -> Self {
        let base = Duration::from_secs(base_s);
        Self {
            base,
            cap: Duration::from_secs(cap_s).max(base),
            now: base,
        }
    }

    /// The silence to wait for now.
    fn wait(&self) -> Duration {
        self.now
    }

    /// A message arrived: the node is alive and the deployment busy.
    fn heard(&mut self) {
        self.now = self.base;
    }

    /// A `PING` was answered after a silence.
    fn pinged(&mut self) {
        self.now = (self.now * 2).min(self.cap);
    }
}

/// Connects to `url` and subscribes to every wake channel.
async fn subscribe(w: &Worker, url: &str) -> redis::RedisResult<PubSub> {
    let mut pubsub = client(w, url)?.get_async_pubsub().await?;
    pubsub.subscribe(w.keys.wake_channels()).await?;
    Ok(pubsub)
}

/// The nodes of `REDIS_URL`, in its order (never empty: a blank entry stands for the default).
fn nodes(url: &str) -> Vec<&str> {
    let nodes: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.is_empty() { vec![""] } else { nodes }
}

/// Parses a wake message: `<ms>`, `<ms>:<shard>`, or a claim's `<ms>.<tag>:<shard>`. A time
/// outside what a Redis score holds exactly (0 to 2^53 ms) is no time at all: `None` (the
/// caller then looks at every shard), never a target that overflows the dispatcher's clock
/// arithmetic.
fn parse(payload: &str) -> Option<Signal> {
    let signal = parse_any(payload)?;
    let sane = |t: i64| (0..1_i64 << 53).contains(&t);
    match signal {
        Signal::At(t, _) | Signal::Lease(t, _, _) if !sane(t) => None,
        s => Some(s),
    }
}

/// [`parse`] without the range check.
fn parse_any(payload: &str) -> Option<Signal> {
    let (at, shard) = match payload.split_once(':') {
        Some((at, shard)) => (at, Some(shard.parse::<u16>().ok()?)),
        None => (payload, None),
    };
    if let (Some((ms, tag)), Some(shard)) = (at.split_once('.'), shard)
        && let (Ok(ms), Ok(tag)) = (ms.parse::<i64>(), tag.parse::<u32>())
    {
        return Some(Signal::Lease(ms, shard, tag));
    }
    let at = at
        .parse::<i64>()
        .ok()
        .or_else(|| at.parse::<f64>().ok().map(|f| f as i64))?;
    Some(Signal::At(at, shard))
}

/// A client for one node of the service Redis.
fn client(w: &Worker, url: &str) -> redis::RedisResult<redis::Client> {
    let mut info = url.into_connection_info()?;
    if let Some(p) = &w.cfg.redis.password {
        let settings = info
            .redis_settings()
            .clone()
            .set_password(p.expose_secret());
        info = info.set_redis_settings(settings);
    }
    shared::redis::tls::client(info, &w.cfg.redis.tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_messages_parse() {
        assert!(matches!(
            parse("1700000000000:3"),
            Some(Signal::At(1_700_000_000_000, Some(3)))
        ));
        assert!(matches!(
            parse("1700000000000"),
            Some(Signal::At(1_700_000_000_000, None))
        ));
        assert!(matches!(
            parse("1700000000000.4294967295:3"),
            Some(Signal::Lease(1_700_000_000_000, 3, u32::MAX))
        ));
        // How a worker of an earlier release reads a claim's message: the same time.
        let former = "1700000000000.4294967295"
            .parse::<f64>()
            .map(|f| f as i64)
            .ok();
        assert_eq!(former, Some(1_700_000_000_000));
        assert!(matches!(
            parse("1.7e12:2"),
            Some(Signal::At(1_700_000_000_000, Some(2)))
        ));
        assert!(parse("soon").is_none());
        // Times no score holds: no target at all (helper-69 stopped a dispatcher with one).
        assert!(parse("-9223372036854775808.5:0").is_none());
        assert!(parse("-1e30:0").is_none());
        assert!(parse("1e300:0").is_none());
        assert!(parse("9223372036854775807:1").is_none());
    }

    #[test]
    fn the_ping_backs_off_while_silent_and_not_after_a_message() {
        let mut q = Quiet::new(2, 30);
        let mut seen = vec![q.wait().as_secs()];
        for _ in 0..5 {
            q.pinged();
            seen.push(q.wait().as_secs());
        }
        assert_eq!(seen, [2, 4, 8, 16, 30, 30]);
        q.heard();
        assert_eq!(q.wait().as_secs(), 2);
        // A cap below the base is the base (no back-off).
        let mut flat = Quiet::new(2, 1);
        flat.pinged();
        assert_eq!(flat.wait().as_secs(), 2);
    }

    #[test]
    fn a_lone_server_is_given_more_patience() {
        let several = Patience::new(500, 3);
        assert_eq!((several.ping, several.subscribe), (ms(500), ms(2_000)));
        let lone = Patience::new(500, 1);
        assert_eq!((lone.ping, lone.subscribe), (ms(5_000), ms(5_000)));
        // No timeout turns the liveness check into a loop.
        assert_eq!(Patience::new(0, 2).ping, ms(100));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nodes_in_order_without_blanks() {
        assert_eq!(
            nodes("redis://a:1, ,redis://b:2 ,"),
            ["redis://a:1", "redis://b:2"]
        );
        assert_eq!(nodes(" , "), [""]);
    }
}

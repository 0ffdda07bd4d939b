//! Wake-ups: a subscriber on its own connection (never the shared multiplexed one) to the
//! service Redis wake channels, one per claimed shard and the former single channel
//! ([`shared::redis::Keys::wake_channels`]). Writers publish the dispatch time of a callback
//! that became its shard's head; claims publish their lease deadline. Each message becomes a
//! [`Signal::At`] for the dispatcher.
//!
//! Messages sent before a subscription takes effect are missed: at start-up (the dispatcher's
//! first pass may run before it) and while it is broken (Redis restarted, network). So every
//! subscription tells the dispatcher to look at every shard ([`Signal::Resync`]), and a
//! re-subscription also asks the reconciler to check whether Redis lost its data.

use std::time::Duration;

use futures::StreamExt;
use redis::IntoConnectionInfo;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Backoff, Signal, Worker};

/// Cluster nodes listened on at most: the first ones of `REDIS_URL`.
const LISTENED_NODES: usize = 3;

/// Runs the subscribers until `stop` fires: one on the standalone server, one on each of the
/// first [`LISTENED_NODES`] nodes of a cluster. A cluster delivers every message to the
/// subscribers of every node, so each is heard up to that many times (a wake-up is
/// idempotent), and a frozen node, which keeps its connection open and says nothing, leaves
/// the others listening (docs/derived-state.md#wake-ups).
pub async fn run(w: Worker, tx: mpsc::Sender<Signal>, stop: CancellationToken) {
    let nodes = if w.cfg.redis.cluster {
        LISTENED_NODES
    } else {
        1
    };
    let urls: Vec<String> = w
        .cfg
        .redis
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .take(nodes)
        .map(String::from)
        .collect();
    futures::future::join_all(
        urls.into_iter()
            .map(|url| listen(w.clone(), url, tx.clone(), stop.clone())),
    )
    .await;
}

/// One subscriber, on the node at `url`, until `stop` fires.
async fn listen(w: Worker, url: String, tx: mpsc::Sender<Signal>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut first = true;
    loop {
        let session = async {
            let client = client(&w, &url)?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(w.keys.wake_channels()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            r = session => r,
        };
        match pubsub {
            Ok(pubsub) => {
                backoff.reset();
                // Messages published before this subscription took effect were not received:
                // on a reconnect those of the outage, at start-up those sent while the
                // dispatcher's first pass was already done. Either way every shard is looked
                // at again (one cheap claim each), so nothing waits for the safety poll.
                w.wake(&tx, Signal::Resync);
                if !first {
                    // Redis may also have lost its data.
                    w.reconcile_check.notify_one();
                }
                first = false;
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        msg = messages.next() => match msg {
                            Some(msg) => {
                                let signal = msg
                                    .get_payload::<String>()
                                    .ok()
                                    .and_then(|s| parse(&s))
                                    .unwrap_or(Signal::Resync);
                                w.wake(&tx, signal);
                            }
                            None => {
                                tracing::warn!("wake subscription closed; reconnecting");
                                break;
                            }
                        },
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "wake subscription failed; retrying");
            }
        }
        if crate::sleep_or_stop(backoff.next_delay(), &stop).await {
            return;
        }
    }
}

/// Parses a wake message: `<ms>` or `<ms>:<shard>`.
fn parse(payload: &str) -> Option<Signal> {
    let (at, shard) = match payload.split_once(':') {
        Some((at, shard)) => (at, Some(shard.parse::<u16>().ok()?)),
        None => (payload, None),
    };
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
        assert!(parse("soon").is_none());
    }
}

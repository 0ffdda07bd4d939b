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

/// Runs the subscriber until `stop` fires. One subscription, on the first node of
/// `REDIS_URL`: a cluster delivers every message to the subscribers of every node
/// (docs/derived-state.md#wake-ups says why not more, and what a frozen first node costs).
pub async fn run(w: Worker, tx: mpsc::Sender<Signal>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut first = true;
    loop {
        let session = async {
            let client = client(&w)?;
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

/// A client for the first node of the service Redis.
fn client(w: &Worker) -> redis::RedisResult<redis::Client> {
    let url = w.cfg.redis.url.split(',').next().unwrap_or_default().trim();
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

//! Key naming. Every key a multi-key script touches shares one hash tag, so scripts stay in one
//! cluster slot; the schedule index is sharded by tag so it spreads over cluster nodes.

use uuid::Uuid;

/// Key builder for one deployment (prefix) and shard count.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    shards: u16,
    /// The shard count before a change (0 = none): still claimed, never written.
    old_shards: u16,
    /// How far ahead creates index their callbacks (ms, 0 = everything):
    /// docs/derived-state.md#the-horizon.
    horizon_ms: i64,
}

impl Keys {
    /// Keys under `prefix` with `shards` schedule shards.
    pub fn new(prefix: &str, shards: u16) -> Self {
        Self {
            prefix: prefix.to_string(),
            shards: shards.max(1),
            old_shards: 0,
            horizon_ms: 0,
        }
    }

    /// The same, with creates leaving callbacks due more than `seconds` ahead to the worker's
    /// horizon loader (`REDIS_SCHEDULE_HORIZON_S`, 0 = off).
    pub fn with_horizon(mut self, seconds: u32) -> Self {
        self.horizon_ms = i64::from(seconds) * 1000;
        self
    }

    /// How far ahead the index holds callbacks (ms, 0 = everything).
    pub fn horizon_ms(&self) -> i64 {
        self.horizon_ms
    }

    /// The same, with `old` shards of a former layout still to drain
    /// (`REDIS_SCHEDULE_SHARDS_OLD`, docs/SCALING.md#changing-the-shard-count).
    pub fn draining(mut self, old: u16) -> Self {
        self.old_shards = old;
        self
    }

    /// Number of shards the worker claims from: the current ones and, while a change of the
    /// count rolls out, the former ones. Writers use [`Self::shard_of`] (current only).
    pub fn claimed_shards(&self) -> u16 {
        self.shards.max(self.old_shards)
    }

    /// Number of schedule shards.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The prefix every key of this deployment (or test) starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Shard of a callback: from the id's random tail, so shards fill evenly.
    pub fn shard_of(&self, id: &Uuid) -> u16 {
        let b = id.as_bytes();
        u16::from_be_bytes([b[14], b[15]]) % self.shards
    }

    /// Schedule index ZSET of a shard: member = callback id, score = dispatch time (ms).
    pub fn sched(&self, shard: u16) -> String {
        format!("{{{}:sched:{shard}}}", self.prefix)
    }

    /// In-flight ZSET of a shard: member = claimed callback id, score = lease deadline (ms).
    pub fn inflight(&self, shard: u16) -> String {
        format!("{{{}:sched:{shard}}}:inflight", self.prefix)
    }

    /// Pub/sub channel that wakes sleeping workers when a shard gets an earlier head or a new
    /// lease deadline. One per shard, in the shard's hash tag: a cluster routes the `PUBLISH`
    /// to the node that holds the shard, so a stalled node delays only its own shards' writers
    /// (docs/derived-state.md#wake-ups), and a standalone writer pipelines it with the `ZADD`.
    pub fn wake_channel(&self, shard: u16) -> String {
        format!("{}:wake", self.sched(shard))
    }

    /// The one wake channel of releases before the per-shard channels; workers still listen
    /// to it so API replicas of a former release keep waking them during a rolling upgrade.
    pub fn former_wake_channel(&self) -> String {
        format!("{}:wake", self.prefix)
    }

    /// Every channel a worker subscribes to: those of the shards it claims and the former one.
    pub fn wake_channels(&self) -> Vec<String> {
        (0..self.claimed_shards())
            .map(|s| self.wake_channel(s))
            .chain(std::iter::once(self.former_wake_channel()))
            .collect()
    }

    /// Marker whose disappearance tells the worker Redis was emptied (rebuild from PostgreSQL).
    pub fn marker(&self) -> String {
        format!("{}:marker", self.prefix)
    }

    /// Queue view of a service: ZSET of its QUEUED/ROUTING callback ids and of its recent
    /// dequeues, two score regions ([`super::queue`]). Releases before 2026-12-05 kept the
    /// dequeues in a list `<view>:done`, no longer read or written (docs/SCALING.md#upgrading-workers-first).
    pub fn queue(&self, tenant: &str, service: &str) -> String {
        format!("{{{}:q:{tenant}:{service}}}", self.prefix)
    }

    /// Dispatch pacing of a tenant (HASH, one script's key): `~o` the tenant cap's arrival
    /// time, `s:<service>` each service's, `s:<service>~h` its placement horizon
    /// (docs/pacing.md).
    pub fn pace(&self, tenant: &str) -> String {
        format!("{{{}:pace:{tenant}}}", self.prefix)
    }

    /// Request rate of one API key across replicas (HASH; `hash` is a digest of the key, never
    /// the key itself).
    pub fn key_rate(&self, hash: &str) -> String {
        format!("{{{}:akr:{hash}}}", self.prefix)
    }

    /// Any other key under the prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_and_keys_share_a_tag() {
        let k = Keys::new("t1", 4);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[k.shard_of(&Uuid::now_v7()) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(k.sched(2), "{t1:sched:2}");
        assert!(k.inflight(2).starts_with("{t1:sched:2}"));
        assert_eq!(k.wake_channel(2), "{t1:sched:2}:wake");
        let draining = Keys::new("t1", 2).draining(3);
        assert_eq!(
            draining.wake_channels(),
            [
                "{t1:sched:0}:wake",
                "{t1:sched:1}:wake",
                "{t1:sched:2}:wake",
                "t1:wake"
            ]
        );
    }
}

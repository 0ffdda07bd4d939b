//! The fate of every claim of one dispatch pass, decided step by step and settled once.
//!
//! A pass claims up to `WORKER_BATCH` ids of one shard: they move into the shard's in-flight
//! set with a lease. Each claimed id leaves the pass in exactly one of three ways:
//! - **released** (the claim is removed): its row no longer wants dispatching (cancelled,
//!   already submitted, purged), or this pass handed it off *and* recorded it in PostgreSQL;
//! - **handed back** to the schedule at a time: its row was moved later, pacing holds it, or a
//!   step before the hand-off failed (rows not loaded, the voice Redis refused the batch);
//! - **kept** in flight until its lease runs out: the default, and what a hand-off that could
//!   not be recorded needs (the re-claim finds the dedupe key and records it then).
//!
//! The steps write fates into a [`Ledger`]; the pass calls [`Ledger::settle`] exactly once at
//! its end, whether the steps succeeded or not. Settling is one Redis call (`ZREM`, or one
//! script when something goes back to the schedule), so it happens whole or not at all, and
//! when it fails every claim is kept: a kept claim is always safe, because the re-claim after
//! the lease reads the row again and the submission dedupe key absorbs a second hand-off.
//! Nothing is released before it is finished, so no claim is lost when a step fails midway
//! (docs/derived-state.md).

use std::collections::HashMap;

use shared::redis::{Keys, RedisConn};
use uuid::Uuid;

use crate::claim::{self, Claimed};

/// What happens to one claim when the pass settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Stays in flight until its lease runs out, then is claimed again.
    Keep,
    /// The claim is removed: nothing is left to do for this attempt.
    Release,
    /// Back into the schedule with this score (ms, Redis clock).
    HandBack(i64),
}

/// Every claim of one pass with its fate (all kept until a step decides otherwise).
#[derive(Debug)]
pub struct Ledger {
    shard: u16,
    /// Claimed ids in claim order, each once.
    ids: Vec<Uuid>,
    fates: HashMap<Uuid, Fate>,
    /// In-flight members that are not callback ids: always released.
    junk: Vec<String>,
}

/// The Redis work of a settlement.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Members whose claim is removed.
    pub release: Vec<String>,
    /// Ids going back to the schedule, with their scores.
    pub back: Vec<(Uuid, i64)>,
    /// How many stay in flight.
    pub kept: usize,
}

impl Ledger {
    /// The ledger of one claim: every id kept, junk released.
    pub fn new(shard: u16, claimed: &Claimed) -> Self {
        let mut fates = HashMap::with_capacity(claimed.ids.len());
        let mut ids = Vec::with_capacity(claimed.ids.len());
        for (id, _) in &claimed.ids {
            if fates.insert(*id, Fate::Keep).is_none() {
                ids.push(*id);
            }
        }
        Self {
            shard,
            ids,
            fates,
            junk: claimed.junk.clone(),
        }
    }

    /// The claimed callback ids (each once, in claim order).
    pub fn ids(&self) -> &[Uuid] {
        &self.ids
    }

    /// Removes the claim of `id` at settlement.
    pub fn release(&mut self, id: Uuid) {
        self.decide(id, Fate::Release);
    }

    /// Hands `id` back to the schedule at `at_ms` at settlement.
    pub fn hand_back(&mut self, id: Uuid, at_ms: i64) {
        self.decide(id, Fate::HandBack(at_ms));
    }

    /// The fate of `id` (`None` if this pass did not claim it).
    pub fn fate(&self, id: Uuid) -> Option<Fate> {
        self.fates.get(&id).copied()
    }

    fn decide(&mut self, id: Uuid, fate: Fate) {
        match self.fates.get_mut(&id) {
            Some(f) => *f = fate,
            None => debug_assert!(false, "{id} was not claimed by this pass"),
        }
    }

    /// The earliest time something goes back to the schedule (the loop wakes for it).
    pub fn earliest_hand_back(&self) -> Option<i64> {
        self.fates
            .values()
            .filter_map(|f| match f {
                Fate::HandBack(at) => Some(*at),
                _ => None,
            })
            .min()
    }

    /// What settling does, claim by claim.
    pub fn plan(&self) -> Plan {
        let mut plan = Plan {
            release: self.junk.clone(),
            ..Plan::default()
        };
        for id in &self.ids {
            match self.fates[id] {
                Fate::Keep => plan.kept += 1,
                Fate::Release => plan.release.push(id.to_string()),
                Fate::HandBack(at) => plan.back.push((*id, at)),
            }
        }
        plan
    }

    /// Settles every claim in one Redis call; on failure every claim stays in flight.
    pub async fn settle(self, conn: &mut RedisConn, keys: &Keys) -> redis::RedisResult<Plan> {
        let plan = self.plan();
        claim::settle(conn, keys, self.shard, &plan.release, &plan.back).await?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(n: u128) -> Claimed {
        Claimed {
            ids: (1..=n).map(|i| (Uuid::from_u128(i), None)).collect(),
            junk: vec!["junk".into()],
            ..Claimed::default()
        }
    }

    #[test]
    fn every_claim_is_kept_until_decided_and_junk_released() {
        let l = Ledger::new(0, &claimed(3));
        let plan = l.plan();
        assert_eq!(plan.kept, 3);
        assert_eq!(plan.release, vec!["junk".to_string()]);
        assert!(plan.back.is_empty());
    }

    #[test]
    fn each_claim_has_exactly_one_fate_the_last_decided() {
        let mut l = Ledger::new(0, &claimed(4));
        let id = |i| Uuid::from_u128(i);
        l.hand_back(id(1), 50);
        l.release(id(1)); // recorded after all: released, not also handed back
        l.hand_back(id(2), 70);
        l.hand_back(id(3), 60);
        let plan = l.plan();
        assert_eq!(plan.release, vec!["junk".to_string(), id(1).to_string()]);
        assert_eq!(plan.back, vec![(id(2), 70), (id(3), 60)]);
        assert_eq!(plan.kept, 1);
        assert_eq!(l.earliest_hand_back(), Some(60));
        assert_eq!(l.fate(id(4)), Some(Fate::Keep));
    }

    #[test]
    fn a_duplicate_claim_is_settled_once() {
        let mut c = claimed(1);
        c.ids.push((Uuid::from_u128(1), Some(5)));
        let l = Ledger::new(0, &c);
        assert_eq!(l.ids(), &[Uuid::from_u128(1)]);
        assert_eq!(l.plan().kept, 1);
    }
}

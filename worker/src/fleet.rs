//! Whether this worker knows of any other (docs/derived-state.md#a-lone-worker).
//!
//! A claim announces its lease deadline so that another worker takes the claim over should
//! this one die. With no other worker there is nobody to tell, and a single-node install (one
//! `engage --with-worker`, or one worker) pays a `PUBLISH` per claim for nothing. So workers
//! greet each other on the former wake channel (`<prefix>:wake`, which every worker
//! subscribes to): after each subscription a worker publishes `hello.<id>.1`, and every other
//! worker answers `hello.<id>.0`. A worker is **alone** once its own hello has come back over
//! its subscription (so it hears what is published) and a grace (2 × `REDIS_TIMEOUT_MS`, at least 1 s) has passed with no
//! other worker's hello or lease announcement heard; it is then **crowded** for good as soon
//! as it hears one (a worker that dies says nothing, so being crowded never ends). A lone
//! worker's claims do not announce; when it becomes crowded it announces the leases it still
//! holds, so the newcomer can take them over.
//!
//! An answer names only the answering worker, so one answer published after a hello was heard
//! answers every hello heard before it: answers are coalesced ([`Fleet::ask`]), one in flight
//! at a time and one more when a hello came in meanwhile. Every hello that asks is answered
//! (an id asking again after its re-subscription too), and a flood costs at most one answer
//! per answer's round trip, never more than the hellos themselves. A hello heard also has
//! every shard's in-flight head read again, at most once per [`RELOOK_SPACING`].

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// What a worker knows of the others.
#[derive(Debug)]
pub struct Fleet {
    id: u64,
    crowded: AtomicBool,
    /// When this worker's hello came back over its current subscription.
    echo: Mutex<Option<Instant>>,
    grace: Duration,
    /// The answer in flight: `None` when none is, `Some(again)` when one is, `again` when a
    /// hello that asks came in after it was sent.
    answering: Mutex<Option<bool>>,
    /// When a hello heard last had every shard's in-flight head read again, and whether
    /// another read is scheduled ([`Fleet::relook`]).
    relook: Mutex<(Option<Instant>, bool)>,
}

/// At most one read of every shard's in-flight head per this long because of hellos: a
/// stream of hellos would otherwise cost a claim per shard each (helper-80).
pub const RELOOK_SPACING: Duration = Duration::from_secs(1);

impl Fleet {
    /// A worker with a random id that waits `grace` after its hello's echo for another's.
    pub fn new(grace: Duration) -> Self {
        Self {
            id: uuid::Uuid::new_v4().as_u64_pair().0,
            crowded: AtomicBool::new(false),
            echo: Mutex::new(None),
            grace,
            answering: Mutex::new(None),
            relook: Mutex::new((None, false)),
        }
    }

    /// A hello was heard: when to read every shard's in-flight head again (`None`: a read is
    /// scheduled already). The reads are [`RELOOK_SPACING`] apart; call
    /// [`relooked`](Self::relooked) when one is done.
    pub fn relook(&self) -> Option<Duration> {
        let Ok(mut r) = self.relook.lock() else {
            return Some(Duration::ZERO);
        };
        if r.1 {
            return None;
        }
        r.1 = true;
        Some(r.0.map_or(Duration::ZERO, |t| {
            RELOOK_SPACING.saturating_sub(t.elapsed())
        }))
    }

    /// The read [`relook`](Self::relook) scheduled is under way.
    pub fn relooked(&self) {
        if let Ok(mut r) = self.relook.lock() {
            *r = (Some(Instant::now()), false);
        }
    }

    /// A hello asks for an answer: whether to start answering (`false` when an answer is in
    /// flight: it is sent once more when that one is out, see [`answered`](Self::answered)).
    pub fn ask(&self) -> bool {
        let Ok(mut a) = self.answering.lock() else {
            return true;
        };
        match *a {
            Some(_) => {
                *a = Some(true);
                false
            }
            None => {
                *a = Some(false);
                true
            }
        }
    }

    /// The answer is out: whether to send another (a hello asked meanwhile).
    pub fn answered(&self) -> bool {
        let Ok(mut a) = self.answering.lock() else {
            return false;
        };
        if *a == Some(true) {
            *a = Some(false);
            true
        } else {
            *a = None;
            false
        }
    }

    /// Whether no other worker is known, and this one would have heard of one.
    pub fn alone(&self) -> bool {
        !self.crowded.load(Ordering::Relaxed)
            && self
                .echo
                .lock()
                .ok()
                .and_then(|e| *e)
                .is_some_and(|t| t.elapsed() >= self.grace)
    }

    /// Whether another worker is known (for good).
    pub fn crowded(&self) -> bool {
        self.crowded.load(Ordering::Relaxed)
    }

    /// A new subscription: messages may have been missed, so not alone until its hello echoes.
    pub fn subscribed(&self) {
        if let Ok(mut e) = self.echo.lock() {
            *e = None;
        }
    }

    /// Takes in a hello; returns what to do about it.
    pub fn hello(&self, id: u64, ask: bool) -> Heard {
        if id == self.id {
            if let Ok(mut e) = self.echo.lock() {
                e.get_or_insert_with(Instant::now);
            }
            return Heard::Own;
        }
        Heard::Other {
            first: self.crowd(),
            reply: ask,
        }
    }

    /// Another worker is known (a hello, or a lease announcement that is not this worker's);
    /// returns whether this is the first.
    pub fn crowd(&self) -> bool {
        !self.crowded.swap(true, Ordering::Relaxed)
    }

    /// This worker's hello: `ask` for an answer (sent after subscribing).
    pub fn greeting(&self, ask: bool) -> String {
        format!("hello.{:x}.{}", self.id, u8::from(ask))
    }
}

/// What a hello means to this worker.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Its own, back over its subscription.
    Own,
    /// Another worker's: `first` when no other was known, `reply` when it asks for an answer.
    Other { first: bool, reply: bool },
}

/// A hello message's id and whether it asks for an answer.
pub fn parse(payload: &str) -> Option<(u64, bool)> {
    let rest = payload.strip_prefix("hello.")?;
    let (id, ask) = rest.split_once('.')?;
    Some((u64::from_str_radix(id, 16).ok()?, ask == "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_only_after_its_own_hello_came_back_and_nobody_answered() {
        let f = Fleet::new(Duration::ZERO);
        assert!(!f.alone(), "not before its hello came back");
        let (id, ask) = parse(&f.greeting(true)).expect("parses");
        assert!(ask);
        assert_eq!(f.hello(id, ask), Heard::Own);
        assert!(f.alone());
        f.subscribed();
        assert!(!f.alone(), "a new subscription waits for its own echo");
        assert_eq!(f.hello(id, false), Heard::Own);
        assert!(f.alone());
        let other = Fleet::new(Duration::ZERO);
        let (oid, oask) = parse(&other.greeting(true)).expect("parses");
        assert_eq!(
            f.hello(oid, oask),
            Heard::Other {
                first: true,
                reply: true
            }
        );
        assert!(!f.alone());
        assert_eq!(
            f.hello(oid, false),
            Heard::Other {
                first: false,
                reply: false
            }
        );
        assert!(!f.alone(), "crowded for good");
    }

    #[test]
    fn answers_are_coalesced_never_dropped() {
        let f = Fleet::new(Duration::ZERO);
        assert!(f.ask(), "the first hello starts an answer");
        assert!(!f.ask(), "one in flight");
        assert!(!f.ask());
        assert!(f.answered(), "hellos came in meanwhile: once more");
        assert!(!f.answered(), "then done");
        assert!(f.ask(), "a later hello, a new answer");
        assert!(!f.answered());
    }

    #[test]
    fn relooks_are_spaced_and_coalesced() {
        let f = Fleet::new(Duration::ZERO);
        assert_eq!(f.relook(), Some(Duration::ZERO), "the first at once");
        assert_eq!(f.relook(), None, "scheduled already");
        f.relooked();
        let next = f.relook().expect("a new one");
        assert!(
            next > RELOOK_SPACING / 2 && next <= RELOOK_SPACING,
            "{next:?}"
        );
        assert_eq!(f.relook(), None);
    }

    #[test]
    fn the_grace_is_waited_and_other_messages_are_not_hellos() {
        let f = Fleet::new(Duration::from_secs(60));
        let (id, _) = parse(&f.greeting(false)).expect("parses");
        f.hello(id, false);
        assert!(!f.alone(), "within the grace");
        for junk in ["1700000000000:3", "hello", "hello.zz.1", "hello.1"] {
            assert_eq!(parse(junk), None, "{junk}");
        }
    }
}

//! Group admission (docs/throttling.md#group-admission): concurrent creates of one service ask
//! the create-time limits in one script call ([`throttle::check_many`]) instead of one call
//! each, the way the group commit shares inserts and index writes (`db::batch`). The script
//! checks and counts the requests one after another, exactly as separate calls would, so the
//! limits stay exact; only the round trips, and the script's `TIME`, are shared.
//!
//! At low load a group is one request and nothing waits for a group to fill: a request queues
//! only while its service's previous call is out (one script round trip), and services never
//! wait for each other. A request whose create gave up before its verdict arrived gives its
//! admission back at once (a single call left it to the next re-seed), also when the call
//! timed out but Redis ran it, and when the verdict arrived but the create went away before
//! reading it (`Unread`); a request that gave up while queued is not asked at all. A
//! request whose write Redis refuses fails open alone; when Redis is not reached, the requests
//! queued behind that call fail open at once rather than each waiting out another timeout.
//! Should the task ever be gone, each request makes its own call: the limits still apply.

use std::collections::{HashMap, HashSet};

use redis::RedisResult;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};
use uuid::Uuid;

use super::{
    RedisHandle,
    throttle::{self, Limits, ThrottleKeys, Verdict},
};

/// Most requests in one script call (each costs the script two hash commands; 64 keep one
/// call well under a millisecond of Redis time).
const MAX_GROUP: usize = 64;

/// One create's question.
struct Job {
    tk: ThrottleKeys,
    limits: Limits,
    id: Uuid,
    number: String,
    reply: oneshot::Sender<RedisResult<Verdict>>,
}

/// Handle on the admission task (cheap to clone).
#[derive(Debug, Clone)]
pub struct Admissions {
    /// `None` outside a runtime (tools): each request then makes its own call.
    tx: Option<mpsc::Sender<Job>>,
    redis: RedisHandle,
}

impl Admissions {
    /// Starts the task that groups the admissions asked of `redis`.
    pub fn spawn(redis: RedisHandle) -> Self {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Self { tx: None, redis };
        };
        let (tx, rx) = mpsc::channel(4096);
        rt.spawn(run(redis.clone(), rx));
        Self {
            tx: Some(tx),
            redis,
        }
    }

    /// [`throttle::check_and_count`] of callback `id` of `number`, grouped with the concurrent
    /// requests of this process. An error is Redis's (the caller fails open).
    pub async fn check(
        &self,
        tk: &ThrottleKeys,
        limits: &Limits,
        id: Uuid,
        number: &str,
    ) -> RedisResult<Verdict> {
        let Some(tx) = &self.tx else {
            return self.alone(tk, limits, id, number).await;
        };
        let (reply, answer) = oneshot::channel();
        let mut answer = Unread {
            rx: Some(answer),
            redis: &self.redis,
            tk,
            limits: *limits,
            id,
        };
        let job = Job {
            tk: tk.clone(),
            limits: *limits,
            id,
            number: number.to_string(),
            reply,
        };
        if tx.send(job).await.is_err() {
            return self.alone(tk, limits, id, number).await;
        }
        match answer.recv().await {
            Ok(verdict) => verdict,
            // The task lost the job (it cannot, short of a panic): the limits still apply.
            Err(_) => self.alone(tk, limits, id, number).await,
        }
    }

    /// The single call, without the task (outside a runtime, or the task gone).
    async fn alone(
        &self,
        tk: &ThrottleKeys,
        limits: &Limits,
        id: Uuid,
        number: &str,
    ) -> RedisResult<Verdict> {
        let mut conn = self.redis.conn().await?;
        throttle::check_and_count(&mut conn, tk, id, number, limits).await
    }
}

/// A verdict on its way from the task. Should the create go away before reading it (the
/// request dropped: its client left), an admission it holds is given back: the channel is
/// closed first, so the task either delivered the verdict here, where it is read back, or
/// finds the create gone and gives it back itself ([`answer`]). Never both, never neither.
struct Unread<'a> {
    rx: Option<oneshot::Receiver<RedisResult<Verdict>>>,
    redis: &'a RedisHandle,
    tk: &'a ThrottleKeys,
    limits: Limits,
    id: Uuid,
}

impl Unread<'_> {
    async fn recv(&mut self) -> Result<RedisResult<Verdict>, oneshot::error::RecvError> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(Err(stopped()));
        };
        let got = rx.await;
        self.rx = None;
        got
    }
}

impl Drop for Unread<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        rx.close();
        if let Ok(Ok(Verdict::Admitted)) = rx.try_recv() {
            give_back(self.redis, self.tk, self.limits, self.id);
        }
    }
}

fn stopped() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "admission task stopped"))
}

/// What a group shares: the service's hash and the limits asked.
type GroupKey = (ThrottleKeys, Limits);

/// The task: per group key, one call out at a time; what arrives meanwhile waits and goes in
/// the next call. Keys never wait for each other (a stalled cluster node delays only the
/// services whose hash it holds).
async fn run(redis: RedisHandle, mut rx: mpsc::Receiver<Job>) {
    let mut waiting: HashMap<GroupKey, Vec<Job>> = HashMap::new();
    let mut out = Out::default();
    let mut calls: JoinSet<Outcome> = JoinSet::new();
    let mut open = true;
    while open || !calls.is_empty() {
        tokio::select! {
            got = rx.recv(), if open => match got {
                Some(job) => {
                    let key = (job.tk.clone(), job.limits);
                    waiting.entry(key.clone()).or_default().push(job);
                    if !out.keys.contains(&key) {
                        start(&redis, &mut calls, &mut out, &mut waiting, key);
                    }
                }
                None => open = false,
            },
            Some(done) = calls.join_next_with_id() => {
                let (id, outcome) = match done {
                    Ok((id, outcome)) => (id, outcome),
                    Err(e) => (e.id(), Outcome::Answered),
                };
                let Some(key) = out.ended(id) else { continue };
                if let Outcome::Unreachable(e) = outcome {
                    // The jobs that queued behind a call Redis did not answer fail open now
                    // instead of each waiting out another timeout.
                    for job in waiting.remove(&key).unwrap_or_default() {
                        let _ = job.reply.send(Err(copy(&e)));
                    }
                }
                if waiting.contains_key(&key) {
                    start(&redis, &mut calls, &mut out, &mut waiting, key);
                }
            }
        }
    }
    // Every sender is gone (shutdown): whatever still waits fails open.
    for job in waiting.into_values().flatten() {
        let _ = job.reply.send(Err(stopped()));
    }
}

/// The calls out: by task, and the set of their keys.
#[derive(Default)]
struct Out {
    tasks: HashMap<tokio::task::Id, GroupKey>,
    keys: HashSet<GroupKey>,
}

impl Out {
    /// Forgets the call of task `id`; its key.
    fn ended(&mut self, id: tokio::task::Id) -> Option<GroupKey> {
        let key = self.tasks.remove(&id)?;
        self.keys.remove(&key);
        Some(key)
    }
}

/// Starts the next call of `key` with up to [`MAX_GROUP`] of its waiting jobs.
fn start(
    redis: &RedisHandle,
    calls: &mut JoinSet<Outcome>,
    out: &mut Out,
    waiting: &mut HashMap<GroupKey, Vec<Job>>,
    key: GroupKey,
) {
    let Some(queue) = waiting.get_mut(&key) else {
        return;
    };
    let jobs: Vec<Job> = queue.drain(..queue.len().min(MAX_GROUP)).collect();
    if queue.is_empty() {
        waiting.remove(&key);
    }
    let handle = calls.spawn(ask(redis.clone(), key.clone(), jobs));
    out.keys.insert(key.clone());
    out.tasks.insert(handle.id(), key);
}

/// How a call ended, for the jobs queued behind it.
enum Outcome {
    /// Redis answered (verdicts, or an error of the request itself).
    Answered,
    /// Redis was not reached or did not answer in time.
    Unreachable(redis::RedisError),
}

/// One script call for a group; every job gets its verdict or the call's error. Jobs whose
/// create already gave up are left out (a stale request must not take a place ahead of its
/// own retry).
async fn ask(redis: RedisHandle, (tk, limits): GroupKey, jobs: Vec<Job>) -> Outcome {
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    if jobs.is_empty() {
        return Outcome::Answered;
    }
    let requests: Vec<(Uuid, &str)> = jobs.iter().map(|j| (j.id, j.number.as_str())).collect();
    let verdicts = match redis.conn().await {
        Ok(mut conn) => throttle::check_many(&mut conn, &tk, &limits, &requests).await,
        Err(e) => Err(e),
    };
    match verdicts {
        Ok(verdicts) => {
            for (job, verdict) in jobs.into_iter().zip(verdicts) {
                answer(&redis, &tk, limits, job, verdict);
            }
            Outcome::Answered
        }
        Err(e) => {
            for job in jobs {
                // Redis may have run the call after all (a timeout): a create that gave up
                // meanwhile gives its admission back (a no-op when there is none).
                if job.reply.send(Err(copy(&e))).is_err() {
                    give_back(&redis, &tk, limits, job.id);
                }
            }
            if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() {
                Outcome::Unreachable(e)
            } else {
                Outcome::Answered
            }
        }
    }
}

/// Sends a verdict; an admission whose caller is gone is given back.
fn answer(
    redis: &RedisHandle,
    tk: &ThrottleKeys,
    limits: Limits,
    job: Job,
    verdict: RedisResult<Verdict>,
) {
    if let Err(Ok(Verdict::Admitted)) = job.reply.send(verdict) {
        give_back(redis, tk, limits, job.id);
    }
}

/// Gives admission `id` back in the background (the group's other answers do not wait). Out
/// of a runtime (shutting down) it is left to the next re-seed.
fn give_back(redis: &RedisHandle, tk: &ThrottleKeys, limits: Limits, id: Uuid) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (redis, tk) = (redis.clone(), tk.clone());
    rt.spawn(async move { give_back_logged(&redis, &tk, &limits, id).await });
}

/// [`throttle::give_back`] of admission `id`, best effort: a failure is counted and logged,
/// and the next re-seed repairs the count.
pub async fn give_back_logged(redis: &RedisHandle, tk: &ThrottleKeys, limits: &Limits, id: Uuid) {
    let given = async {
        let mut conn = redis.conn().await?;
        throttle::give_back(&mut conn, tk, limits, id).await
    };
    if let Err(e) = given.await {
        ::metrics::counter!(crate::metrics::REDIS_WRITE_FAILED, "op" => "throttle_give_back")
            .increment(1);
        tracing::warn!(callback.id = %id, error = %e, "throttle give-back failed; the next re-seed repairs it");
    }
}

/// [`throttle::restore`] of callback `id`, best effort as [`give_back_logged`].
pub async fn restore_logged(
    redis: &RedisHandle,
    tk: &ThrottleKeys,
    (limits, id, number): (&Limits, Uuid, &str),
) {
    let restored = async {
        let mut conn = redis.conn().await?;
        throttle::restore(&mut conn, tk, limits, id, number).await
    };
    if let Err(e) = restored.await {
        ::metrics::counter!(crate::metrics::REDIS_WRITE_FAILED, "op" => "throttle_restore")
            .increment(1);
        tracing::warn!(callback.id = %id, error = %e, "throttle restore failed; the next re-seeds repair it");
    }
}

/// The same error for every job of a failed call (`RedisError` is not `Clone`).
fn copy(e: &redis::RedisError) -> redis::RedisError {
    redis::RedisError::from((e.kind(), "throttle call failed", e.to_string()))
}
